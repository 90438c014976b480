"""The synthetic input source, and the training loop and benchmarks on a machine without
TensorFlow (tests/without_tensorflow.py hides TensorFlow, tfds, TensorBoard and clu)."""

import json
import os
import subprocess
import sys

import ml_collections
import numpy as np
import pytest

from bn_repro.data import sources, synthetic
from bn_repro.errors import ConfigError
from bn_repro.parallel import device_map

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WITHOUT_TF = os.path.join(REPO, 'tests', 'without_tensorflow.py')


def _data_config(**overrides):
  from configs import tiny
  c = tiny.get_config().data
  c.source = 'synthetic'
  for k, v in overrides.items():
    c[k] = v
  return c


def test_synthetic_training_batches_keep_the_pipelines_contract():
  source = sources.open_source(_data_config(num_train_examples=160))
  assert isinstance(source, synthetic.SyntheticSource)
  data = source.train_data(global_batch=16, seed=3)
  assert data.steps_per_epoch == 10
  stream = data.batches(0)
  first = [next(stream) for _ in range(12)]
  b = first[0]
  assert b['image'].shape == (16, 28, 28, 1) and b['image'].dtype == np.uint8
  assert b['label'].dtype == np.int32 and 0 <= b['label'].min() and b['label'].max() < 10
  # The seeds the tf.data pipeline gives: (stream = epoch, position in the epoch).
  np.testing.assert_array_equal(first[3]['aug_seed'][:, 1], 3 * 16 + np.arange(16))
  assert set(first[3]['aug_seed'][:, 0]) == {0} and set(first[11]['aug_seed'][:, 0]) == {1}
  np.testing.assert_array_equal(first[11]['aug_seed'][:, 1], 16 + np.arange(16))
  assert not np.array_equal(first[0]['image'], first[1]['image'])
  # Resuming at step 7 yields what the uninterrupted stream yielded there, bitwise.
  resumed = next(source.train_data(global_batch=16, seed=3).batches(7))
  for key in first[7]:
    np.testing.assert_array_equal(resumed[key], first[7][key])
  other_seed = next(source.train_data(global_batch=16, seed=4).batches(0))
  assert not np.array_equal(other_seed['image'], b['image'])


def test_synthetic_eval_covers_every_example_once_with_padding():
  source = sources.open_source(_data_config(num_eval_examples=100))
  data = source.eval_data(global_batch=16)
  batches = list(data.batches())
  assert data.num_examples == 100 and len(batches) == data.num_steps == 7
  assert all(b['image'].shape == (16, 28, 28, 1) for b in batches)
  mask = np.concatenate([b['mask'] for b in batches])
  index = np.concatenate([b['index'] for b in batches])[mask]
  assert mask.sum() == 100
  np.testing.assert_array_equal(np.sort(index), np.arange(100))


def test_an_unknown_source_is_a_config_error():
  with pytest.raises(ConfigError, match="data.source='tfrecords'"):
    sources.open_source(ml_collections.ConfigDict({'source': 'tfrecords', 'dataset': 'mnist'}))


def test_a_synthetic_split_smaller_than_a_batch_is_refused():
  with pytest.raises(Exception, match='fewer examples per process'):
    sources.open_source(_data_config(num_train_examples=8)).train_data(global_batch=16, seed=0)


def _run_without_tf(args, timeout=900):
  out = subprocess.run([sys.executable, WITHOUT_TF] + args, cwd=REPO, capture_output=True,
                       text=True, timeout=timeout, env=dict(os.environ, PYTHONPATH=REPO))
  assert out.returncode == 0, out.stderr[-3000:]
  return out


def test_the_blocker_hides_tensorflow_as_a_machine_without_it_would(tmp_path):
  script = tmp_path / 'probe.py'
  script.write_text('import importlib.util\n'
                    'assert importlib.util.find_spec("tensorflow") is None\n'
                    'try:\n  import tensorflow_datasets\nexcept ModuleNotFoundError:\n'
                    '  print("absent")\n')
  assert _run_without_tf([str(script)]).stdout.strip() == 'absent'
  script.write_text('import sys; sys.modules["tensorflow"] = sys\n')
  out = subprocess.run([sys.executable, WITHOUT_TF, str(script)], capture_output=True, text=True)
  assert out.returncode == 3 and 'loaded anyway' in out.stderr


def test_train_and_evaluate_runs_and_resumes_without_tensorflow(tmp_path):
  """The whole loop (hooks, metrics, checkpoints, final evaluation) on synthetic batches,
  in a process where TensorFlow, tfds and TensorBoard cannot be imported."""
  workdir = str(tmp_path / 'run')
  common = ['scripts/train.py', '--config', 'configs/tiny.py', '--workdir', workdir,
            '--config.data.source=synthetic', '--config.data.num_eval_examples=40']
  out = _run_without_tf(common)
  assert 'TensorFlow or clu is not installed: no TensorBoard events' in out.stderr
  results = json.loads(open(os.path.join(workdir, 'results.json')).read())
  assert results['step'] == 4 and 0 <= results['eval_top1'] <= 1
  assert results['eval_examples'] == 40
  metrics = [json.loads(line) for line in open(os.path.join(workdir, 'metrics.jsonl'))]
  assert any('steps_per_sec' in m for m in metrics)
  assert [m['step'] for m in metrics if 'train_loss' in m] == [1, 2, 3, 4]
  out = _run_without_tf(common + ['--config.train_for=6 steps'])
  assert 'Resumed from' in out.stderr
  metrics = [json.loads(line) for line in open(os.path.join(workdir, 'metrics.jsonl'))]
  assert [m['step'] for m in metrics if 'train_loss' in m] == [1, 2, 3, 4, 5, 6]


def test_the_loop_benchmark_runs_without_tensorflow(tmp_path):
  """benchmark.py's full loop against the bare step, the GPU image's way (no TensorFlow)."""
  output = tmp_path / 'bench.json'
  _run_without_tf(['scripts/benchmark.py', '--config', 'configs/small_scale.py:mlp',
                   '--config.data.source=synthetic', '--parts', '1,2', '--steps', '3',
                   '--repeats', '2', '--batch_size', '4', '--loop_steps', '12',
                   '--loop_checkpoint_every', '6 steps', '--output', str(output)])
  loop = json.loads(output.read_text())['2_full_loop']
  assert loop['source'] == 'synthetic' and loop['checkpoint_every'] == '6 steps'
  assert loop['images']['reports'] >= 2 and loop['ratio_to_bare_step'] > 0


def test_the_default_source_stays_tfds_and_old_workdirs_keep_their_identity():
  from bn_repro.training import identity
  from configs import tiny
  config = tiny.get_config()
  assert sources.kind(config.data) == 'tfds'
  saved = ml_collections.ConfigDict(config.to_dict())
  del saved.data['source']   # a config saved before data.source existed
  assert identity.identity_difference(saved, config) is None
  config.data.source = 'synthetic'
  assert 'data.source' in identity.identity_difference(saved, config)
  assert device_map.device_count() == 8
