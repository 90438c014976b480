"""2 processes x 4 simulated CPU devices against 1 process x 8, over loopback (gloo)."""

import json
import os
import sys
import time

import jax
import numpy as np

import orbax.checkpoint as ocp

from bn_repro.evaluation.trained import load_trained
from bn_repro.parallel import device_map
from bn_repro.parallel.launch import launch_local
from bn_repro.training.checkpoints import Checkpoints, abstract_like
from bn_repro.workdir import Workdir
from tests import multihost_harness

HARNESS = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'multihost_harness.py')


def _two_processes(command, timeout=420, devices=4, env=None):
  return launch_local([sys.executable] + command, 2, cpu_devices_per_process=devices,
                      timeout=timeout, sink=open(os.devnull, 'w'), env=env)


def _relative_difference(a, b, keys, reference=None):
  """||a - b|| / ||b - reference|| over all the arrays of `keys` together."""
  diff = np.sqrt(sum(np.sum((a[k].astype(np.float64) - b[k]) ** 2) for k in keys))
  base = b if reference is None else {k: b[k].astype(np.float64) - reference[k] for k in keys}
  size = np.sqrt(sum(np.sum(np.asarray(base[k], np.float64) ** 2) for k in keys))
  return diff / size


def _compare(a, b):
  """Exact where the computation is exact; elsewhere within rounding, measured as a whole.

  Summation order differs between one process and two (gloo), so results agree to
  rounding, not bitwise, and a single small, ill-conditioned leaf (a BN parameter of a
  4-channel layer) can differ by percents after a few steps. So: the evaluation counts must
  be equal, the losses and the population statistics agree to float32 rounding, and the
  trained parameters and EMA as a whole: their difference is under 0.1% of how far
  training moved them. A real fault (statistics not shared across hosts, gradients not
  averaged) moves them by tens of percent.
  """
  assert sorted(a.files) == sorted(b.files)
  np.testing.assert_array_equal(a['eval_counts'], b['eval_counts'])
  assert a['eval_counts'][0] == 101
  np.testing.assert_allclose(a['losses'], b['losses'], rtol=1e-5)
  population_keys = [k for k in a.files if k.startswith('population')]
  assert _relative_difference(a, b, population_keys) < 1e-5
  for prefix in ('params', 'ema'):
    keys = [k for k in a.files if k.startswith(prefix) and not k.startswith('initial')]
    initial = {k: b['initial_' + k] for k in keys}
    assert _relative_difference(a, b, keys, initial) < 1e-3, prefix


def test_two_processes_of_four_devices_match_one_process_of_eight(fmnist_data_dir, tmp_path):
  """Exact eval, population statistics, training with BN statistics synced over
  all devices of both hosts, and a checkpoint written by both processes that
  restores here."""
  two, one = tmp_path / 'two', tmp_path / 'one'
  status, outputs = _two_processes(['-u', HARNESS, '--mode', 'run', '--out', str(two),
                                    '--data_dir', fmnist_data_dir])
  assert status == 0, ''.join(outputs[0][-30:] + outputs[1][-30:])
  multihost_harness.compute_and_save(str(one), fmnist_data_dir)  # here: 1 process x 8 devices
  _compare(np.load(two / 'result.npz'), np.load(one / 'result.npz'))

  # The checkpoint the two processes wrote restores here and holds what they computed.
  state_one = _restore_state(Checkpoints(Workdir(str(one / 'workdir')).checkpoint_dir,
                                         read_only=True))
  state_two = _restore_state(Checkpoints(Workdir(str(two / 'workdir')).checkpoint_dir,
                                         read_only=True),
                             target=abstract_like(state_one, device_map.replicated_sharding()))
  saved_two = multihost_harness.flat(state_two['model']['params'], 'params')
  result_two = np.load(two / 'result.npz')
  for key, value in saved_two.items():
    np.testing.assert_array_equal(value, result_two[key])


def _restore_state(checkpoints, target=None):
  """{'model': ..., 'training': ...} of the latest checkpoint, onto target's shardings if given."""
  path = checkpoints.path(checkpoints.latest_step())
  return {item: ocp.StandardCheckpointer().restore(os.path.join(path, item),
                                                   target[item] if target else None)
          for item in ('model', 'training')}


def test_train_script_on_two_processes(tiny_config, tmp_path, repo_root):
  workdir = str(tmp_path / 'run')
  status, outputs = _two_processes(
      [os.path.join(repo_root, 'scripts', 'train.py'), '--config',
       os.path.join(repo_root, 'configs', 'tiny.py'), '--workdir', workdir,
       f'--config.data.data_dir={tiny_config.data.data_dir}', '--config.train_for=2 steps',
       '--config.hooks.eval.every=end'])
  assert status == 0, ''.join(outputs[0][-40:] + outputs[1][-40:])
  with open(os.path.join(workdir, 'results.json')) as f:
    results = json.load(f)
  assert results['eval_examples'] == 256 and results['step'] == 2
  events = [f for f in os.listdir(workdir) if f.startswith('events.out.tfevents')]
  assert len(events) == 1                       # only process 0 writes metrics
  assert any('2 processes' in line for line in outputs[0])
  run = load_trained(workdir)                   # restores here, on 1 process
  assert run.step == 2


def test_a_sigint_to_one_process_stops_both_at_one_step(tiny_config, tmp_path, repo_root):
  """Ctrl-C reaching one worker (process 1, at step 3) stops both at the same step, each
  saves that one checkpoint, and the run exits as interrupted (130)."""
  workdir = str(tmp_path / 'run')
  status, outputs = _two_processes(
      [os.path.join(repo_root, 'scripts', 'train.py'), '--config',
       os.path.join(repo_root, 'configs', 'tiny.py'), '--workdir', workdir,
       f'--config.data.data_dir={tiny_config.data.data_dir}', '--config.train_for=60 steps',
       '--config.hooks.eval.every=never', '--config.hooks.checkpoint.every=1000 steps'],
      env=dict(os.environ, BN_REPRO_FAULT='step@3:int', BN_REPRO_FAULT_PROCESS='1'))
  text = [''.join(lines) for lines in outputs]
  assert status == 130, text[0][-3000:] + text[1][-3000:]
  assert 'SIGINT received' in text[1] and 'SIGINT received' not in text[0]
  saved = Checkpoints(Workdir(workdir).checkpoint_dir, read_only=True).all_steps()
  assert len(saved) == 1 and 3 <= saved[0] < 60, saved
  for out in text:
    assert f'saved a checkpoint at step {saved[0]}' in out
  assert not os.path.exists(os.path.join(workdir, 'results.json'))


def test_processes_that_disagree_fail_clearly():
  status, outputs = _two_processes(['-u', HARNESS, '--mode', 'disagree'], timeout=120)
  assert status != 0
  assert any('processes disagree on the config' in line for out in outputs for line in out)


def test_a_dying_process_fails_the_run_quickly():
  start = time.time()
  status, outputs = _two_processes(['-u', HARNESS, '--mode', 'die'], timeout=120)
  assert status != 0
  assert time.time() - start < 60
