"""The crash matrix: a run killed (or signalled) at each dangerous moment, then resumed,
ends bitwise where an uninterrupted run ends, with every metric logged exactly once.

The moments are named fault points (bn_repro/faults.py) that the training
subprocess reaches on its own, so each case is deterministic: SIGKILL at
start-up, in the middle of a step, while a checkpoint is being written and in
the final evaluation; SIGTERM and SIGINT in the middle of a step and while a
checkpoint step's checkpoint is being written (the step is saved once, the exit is an
interruption's: 0 or 130). The interrupted runs start together, then each is resumed in
this process.
"""

import collections
import json
import os
import subprocess
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from bn_repro.training.checkpoints import Checkpoints
from bn_repro.loop.train import train_and_evaluate
from bn_repro.workdir import Workdir

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 4   # checkpoints and evaluations every 2 steps (configs/tiny.py), a log line every step

CASES = {
    # fault: (exit status of the interrupted process, steps the resumed run may start from:
    # a checkpoint still being written in the background when the process dies is lost)
    'start@0:kill': (-9, (0,)),
    'step@3:kill': (-9, (0, 2)),
    'checkpoint@2:kill': (-9, (0, 2)),
    'evaluate@4:kill': (-9, (0, 2)),
    'step@3:term': (0, (3,)),
    'step@3:int': (130, (3,)),
    # A signal on a checkpoint step, after its checkpoint started: that save is the one.
    'checkpoint@2:term': (0, (2,)),
    'checkpoint@2:int': (130, (2,)),
    # SIGTERM during the final evaluation: it finishes, the final checkpoint is saved.
    'evaluate@4:term': (0, (4,)),
}


def _final_state(workdir):
  checkpoints = Checkpoints(Workdir(workdir).checkpoint_dir, read_only=True)
  path = checkpoints.path(STEPS)
  return {item: ocp.StandardCheckpointer().restore(os.path.join(path, item))
          for item in ('model', 'training')}


@pytest.fixture(scope='module')
def reference(fmnist_data_dir, tmp_path_factory):
  from configs import tiny
  config = tiny.get_config()
  config.data.data_dir = fmnist_data_dir
  config.train_for = f'{STEPS} steps'
  workdir = str(tmp_path_factory.mktemp('reference'))
  train_and_evaluate(config, workdir)
  return _final_state(workdir)


@pytest.fixture(scope='module')
def interrupted(fmnist_data_dir, tmp_path_factory):
  """{fault: (exit status, stderr, workdir)}: every case's interrupted run, run concurrently."""
  started = {}
  for fault in CASES:
    workdir = str(tmp_path_factory.mktemp('crash') / 'run')
    started[fault] = (subprocess.Popen(
        [sys.executable, 'scripts/train.py', '--config', 'configs/tiny.py', '--workdir', workdir,
         f'--config.data.data_dir={fmnist_data_dir}', f'--config.train_for={STEPS} steps'],
        cwd=REPO, env=dict(os.environ, BN_REPRO_FAULT=fault), stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True), workdir)
  return {fault: (proc.wait(timeout=600), proc.stderr.read(), workdir)
          for fault, (proc, workdir) in started.items()}


@pytest.mark.parametrize('fault', list(CASES))
def test_interrupted_run_resumes_to_the_uninterrupted_result(fault, reference, interrupted,
                                                             tiny_config):
  expected_status, expected_start = CASES[fault]
  status, stderr, workdir = interrupted[fault]
  assert status == expected_status, stderr[-3000:]
  completed = Workdir(workdir).read_results() is not None
  if status in (0, 130) and not completed:
    assert f'saved a checkpoint at step {expected_start[0]}' in stderr, stderr[-3000:]
    assert 'error:' not in stderr, stderr[-3000:]
  if fault.endswith((':term', ':int')):    # every signal is said, once, when it arrives
    name = 'SIGTERM' if fault.endswith(':term') else 'SIGINT'
    assert stderr.count(f'{name} received: saving a checkpoint') == 1, stderr[-3000:]
  saved = Checkpoints(Workdir(workdir).checkpoint_dir, read_only=True).all_steps()
  assert max(saved, default=0) in expected_start

  if not completed:
    config = tiny_config
    config.train_for = f'{STEPS} steps'
    assert train_and_evaluate(config, workdir)['step'] == STEPS

  resumed = _final_state(workdir)
  for x, y in zip(jax.tree.leaves(resumed), jax.tree.leaves(reference)):
    np.testing.assert_array_equal(x, y)

  # Every metric of every step, once: nothing lost to the crash, nothing written twice.
  lines = [json.loads(line) for line in open(Workdir(workdir).metrics_file)]
  written = collections.Counter((r['step'], k) for r in lines for k in r if k != 'step')
  assert [key for key, n in written.items() if n > 1] == []
  records = {r['step']: r for r in Workdir(workdir).read_metrics()}
  assert all('train_loss' in records[s] for s in range(1, STEPS + 1))
  assert [s for s in sorted(records) if 'eval_top1' in records[s]] == [2, 4]
