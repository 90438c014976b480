"""scripts/model_summary.py prints the table, the exact parameter count and FLOPs."""

import os
import re
import subprocess
import sys


def run_script(repo_root, *args):
  env = dict(os.environ, XLA_FLAGS='')  # one device is enough here
  return subprocess.run([sys.executable, 'scripts/model_summary.py', *args],
                        cwd=repo_root, env=env, capture_output=True, text=True,
                        timeout=300)


def test_default_bn_inception_summary(repo_root):
  out = run_script(repo_root, '--config', 'configs/bn_x30.py')
  assert out.returncode == 0, out.stderr
  assert 'total params: 11278528' in out.stdout
  assert re.search(r'inception_4e\s+7x7x1056', out.stdout)
  flops = float(re.search(r'forward FLOPs per image: ([\d.]+) G', out.stdout).group(1))
  assert 3.0 < flops < 5.0  # the paper: about 2 G multiply-adds


def test_overrides_and_one_line_errors(repo_root):
  out = run_script(repo_root, '--config', 'configs/bn_x30.py', '--config.model.stem=plain')
  assert 'total params: 11285224' in out.stdout, out.stderr
  out = run_script(repo_root, '--config', 'configs/bn_x30.py', '--config.model.width=0.5')
  assert out.returncode == 0, out.stderr
  assert re.search(r'inception_3a\s+28x28x128', out.stdout)
  out = run_script(repo_root, '--config', 'configs/bn_x30.py', '--config.model.width=-1')
  assert out.returncode == 2
  assert out.stderr.strip().splitlines()[-1] == 'error: model.width=-1.0 must be > 0'
