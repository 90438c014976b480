"""Every script's --help: quick (answered before TensorFlow and JAX are imported, which
takes seconds) and complete (the script's own flags, and the shared ones of bn_repro/cli.py
that apply to it)."""

import glob
import os
import re
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = sorted(glob.glob(os.path.join(REPO, 'scripts', '*.py')))
SHARED = ('verbose', 'allow_cpu', 'coordinator_address', 'num_processes', 'process_id',
          'compilation_cache_dir')
TRAIN_INTO_A_WORKDIR = {'train.py', 'demo.py', 'ics_probe.py'}
HEAVY = {'tensorflow', 'tensorflow_datasets', 'jax', 'jaxlib', 'flax', 'orbax', 'clu'}


def _help(*args, cwd):
  """(stdout, top-level packages imported) of `python -X importtime *args`."""
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(
      [REPO] + ([os.environ['PYTHONPATH']] if os.environ.get('PYTHONPATH') else [])))
  out = subprocess.run([sys.executable, '-X', 'importtime', *args], cwd=cwd, env=env,
                       capture_output=True, text=True, timeout=120)
  assert out.returncode == 0, out.stderr[-3000:]
  # Lines 'import time: self [us] | cumulative | package.module', one per module imported.
  imported = {line.rsplit('|', 1)[1].strip().split('.')[0] for line in out.stderr.splitlines()
              if line.startswith('import time:') and line.count('|') == 2}
  return out.stdout, imported


def _listed(name, text) -> bool:
  return re.search(rf'--(\[no\])?{name}\b', text) is not None


@pytest.mark.parametrize('script', SCRIPTS, ids=os.path.basename)
def test_help_is_answered_before_the_heavy_imports_and_lists_every_flag(script, tmp_path):
  source = open(script, encoding='utf-8').read()
  text, imported = _help(script, '--help', cwd=tmp_path)
  assert 'bn_repro' in imported or 'argparse' in imported, sorted(imported)  # the lines parsed
  assert not imported & HEAVY, sorted(imported & HEAVY)
  own = re.findall(r"(?:DEFINE_\w+\(\s*'|add_argument\(\s*'--)(\w+)'", source)
  assert own, 'no flags found in the source'
  missing = [name for name in own if not _listed(name, text)]
  if 'cli.start(' in source:
    missing += [name for name in SHARED if not _listed(name, text)]
    assert _listed('allow_config_change', text) == \
        (os.path.basename(script) in TRAIN_INTO_A_WORKDIR)
  assert not missing, text
  assert os.listdir(tmp_path) == []


def test_short_and_full_help():
  train = os.path.join(REPO, 'scripts', 'train.py')
  short, imported = _help(train, '-h', cwd=REPO)
  assert _listed('allow_config_change', short) and 'Try --helpfull' in short
  assert not imported & HEAVY
  full, imported = _help(train, '--config', 'configs/tiny.py', '--helpfull', cwd=REPO)
  assert _listed('helpfull', full) and _listed('allow_config_change', full)
  assert _listed('only_check_args', full)                       # absl's own flags too
  assert not imported & HEAVY


def test_the_statistics_choices_are_the_evaluators():
  from bn_repro import cli
  from bn_repro.evaluation import evaluators
  assert tuple(cli.EVAL_STATISTICS) == tuple(evaluators.STATISTICS)
