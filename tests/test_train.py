"""End-to-end training on 8 simulated devices: paper configs, resume, SIGTERM, NaN, errors."""

import importlib
import json
import logging
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

from bn_repro import device_map, optim, steps
from bn_repro.checkpointing import Checkpoints
from bn_repro.errors import CheckpointError, ConfigError, DataError
from bn_repro.input_pipeline import pipeline
from bn_repro.input_pipeline.specs import dataset_spec
from bn_repro.metric_logging import read_metrics
from bn_repro.models import build_model
from bn_repro.train import TrainingDiverged, load_config, train_and_evaluate
from bn_repro.train_state import create_train_state

MOCK_EXAMPLES = 40  # not a multiple of the eval batch: the last batch is padded


def mock_imagenet_config(name):
  config = importlib.import_module(f'configs.{name}').get_config()
  config.data.image_size = 32
  config.data.num_train_examples = MOCK_EXAMPLES
  config.data.num_eval_examples = MOCK_EXAMPLES
  config.data.shuffle_buffer = 64
  config.model.width = 1 / 16
  config.global_batch_size = 16
  config.eval_batch_size = 16
  config.num_train_steps = 2
  config.eval_every_epochs = -1.0
  config.log_every_steps = 1
  return config


@pytest.mark.parametrize('name', ['inception', 'bn_baseline', 'bn_x5', 'bn_x30', 'bn_x5_sigmoid'])
def test_paper_config_trains_on_mock_imagenet(name, tmp_path):
  config = mock_imagenet_config(name)
  with tfds.testing.mock_data(num_examples=MOCK_EXAMPLES):
    results = train_and_evaluate(config, str(tmp_path))
  assert results['step'] == 2
  assert results['eval_examples'] == MOCK_EXAMPLES
  assert 0 <= results['eval_top1'] <= results['eval_top5'] <= 1
  train_records = [r for r in read_metrics(str(tmp_path)) if 'train_loss' in r]
  assert [r['step'] for r in train_records] == [1, 2]
  assert all(np.isfinite(r['train_loss']) for r in train_records)
  expected_lr = config.optimizer.learning_rate * config.optimizer.lr_scale
  assert train_records[0]['learning_rate'] == pytest.approx(expected_lr)
  assert Checkpoints(str(tmp_path)).latest_step() == 2
  assert any(f.startswith('events.out.tfevents') for f in os.listdir(tmp_path))
  assert load_config(str(tmp_path)).name == name


def test_small_real_dataset_learns_and_records_targets(tiny_config, tmp_path):
  config = tiny_config
  config.num_train_steps = 40
  config.eval_every_steps = 20
  config.log_every_steps = 10
  config.checkpoint_every_steps = 20
  config.target_accuracies = (0.3, 0.99)
  config.eval_population_batches = 2
  results = train_and_evaluate(config, str(tmp_path))
  assert results['eval_examples'] == 256
  assert results['eval_top1'] > 0.3, results   # chance is 0.1
  with open(tmp_path / 'targets.json') as f:
    reached = json.load(f)['reached']
  assert '0.3' in reached and '0.99' not in reached
  assert reached['0.3']['step'] in (20, 40)
  evals = [r for r in read_metrics(str(tmp_path)) if 'eval_top1' in r]
  assert [r['step'] for r in evals] == [20, 40]
  # Population-statistics evaluations: the step-40 one used batches 3 and 4 of
  # one training stream of seed + 1 (batches 1 and 2 served the step-20 one).
  population = [r for r in read_metrics(str(tmp_path)) if 'eval_population_top1' in r]
  assert [r['step'] for r in population] == [20, 40]
  from bn_repro import evaluation, population_stats
  from bn_repro.trained_run import load_run
  run = load_run(str(tmp_path))
  source = pipeline.Source(run.config.data)
  stream = pipeline.prefetch_to_devices(pipeline.TrainData(
      source, global_batch=config.global_batch_size, seed=config.seed + 1).batches(0), 2)
  for _ in range(2):
    next(stream)
  stats, _, _ = population_stats.compute(run.model, run.state.variables(), source.spec,
                                         stream, 2)
  direct = evaluation.evaluate(
      steps.make_eval_step(run.model, source.spec, stats='population'),
      run.state.variables(device_map.replicate(stats)),
      pipeline.EvalData(source, global_batch=config.eval_batch_size))
  assert population[-1]['eval_population_top1'] == pytest.approx(direct.top1, abs=1 / 256)
  assert population[-1]['eval_population_loss'] == pytest.approx(direct.loss, rel=1e-4)


def _params(workdir):
  checkpoints = Checkpoints(workdir, read_only=True)
  step = checkpoints.latest_step()
  meta = checkpoints.read_meta(step)
  from orbax import checkpoint as ocp
  restored = ocp.StandardCheckpointer().restore(os.path.join(checkpoints.path(step), 'state'))
  return step, meta, restored


def test_resume_reaches_the_same_parameters_bitwise(tiny_config, tmp_path):
  """Stop at step 2, resume to 4: bitwise equal to a straight run to 4.

  Bitwise, because the data order and augmentation are a pure function of
  (seed, epoch, position), dropout keys derive from the step, and XLA on CPU
  runs the same compiled program deterministically.
  """
  config = tiny_config
  config.eval_every_steps = -1
  config.model.dropout_rate = 0.3   # exercise the RNG too
  straight, resumed = str(tmp_path / 'straight'), str(tmp_path / 'resumed')
  train_and_evaluate(config, straight)
  config.num_train_steps = 2
  train_and_evaluate(config, resumed)
  config.num_train_steps = 4
  train_and_evaluate(config, resumed)
  step_a, _, a = _params(straight)
  step_b, _, b = _params(resumed)
  assert step_a == step_b == 4
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y)


def test_sigterm_saves_a_checkpoint_and_exits_zero(tiny_config, tmp_path, repo_root):
  workdir = str(tmp_path / 'run')
  args = [sys.executable, 'scripts/train.py', '--config', 'configs/tiny.py',
          '--workdir', workdir, f'--config.data.data_dir={tiny_config.data.data_dir}',
          '--config.num_train_steps=100000', '--config.eval_every_steps=-1',
          '--config.checkpoint_every_steps=100000', '--config.log_every_steps=1']
  proc = subprocess.Popen(args, cwd=repo_root, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
  metrics = os.path.join(workdir, 'metrics.jsonl')
  deadline = time.time() + 240
  while time.time() < deadline and proc.poll() is None:
    if os.path.exists(metrics) and any('train_loss' in line for line in open(metrics)):
      break
    time.sleep(0.5)
  assert proc.poll() is None, proc.communicate()[0][-3000:]
  proc.send_signal(signal.SIGTERM)
  out, _ = proc.communicate(timeout=120)
  assert proc.returncode == 0, out[-3000:]
  assert 'SIGTERM: saved a checkpoint at step' in out
  step = Checkpoints(workdir).latest_step()
  assert step is not None and step >= 1


def test_nan_stops_within_a_step_and_keeps_the_last_good_checkpoint(tiny_config, tmp_path):
  config = tiny_config
  config.eval_every_steps = -1
  config.num_train_steps = 2
  workdir = str(tmp_path)
  train_and_evaluate(config, workdir)     # a good checkpoint at step 2
  before = sorted(os.listdir(os.path.join(workdir, 'checkpoints')))
  config.num_train_steps = 50
  config.optimizer.learning_rate = 1e30   # diverges at once
  with pytest.raises(TrainingDiverged, match=r'NaN/Inf at step [34] .*last checkpoint \(step 2\) is intact'):
    train_and_evaluate(config, workdir)
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == before
  step, _, state = _params(workdir)
  assert step == 2 and all(np.isfinite(x).all() for x in jax.tree.leaves(state['params']))


def test_eval_counts_every_example_once(tiny_config):
  """997 examples, global eval batch 64 on 8 devices: counts equal a direct computation."""
  config = tiny_config
  config.data.eval_split = 'test[:997]'
  model = build_model(config.model, image_size=28, sync_bn=True)
  spec = dataset_spec('fashion_mnist')
  tx = optim.make_optimizer(config.optimizer, 100)
  state = create_train_state(model, tx, (28, 28, 1), 0, device_map.replicated_sharding())
  source = pipeline.Source(config.data)
  eval_data = pipeline.EvalData(source, global_batch=64)
  assert eval_data.num_steps == 16 and eval_data.num_examples == 997
  from bn_repro.evaluation import evaluate
  result = evaluate(steps.make_eval_step(model, spec, stats='ema'), state.variables(), eval_data)
  assert result.count == 997

  # Direct: one device, all examples at once, no padding.
  images = np.concatenate([b['image'][b['mask']] for b in eval_data.batches()])
  labels = np.concatenate([b['label'][b['mask']] for b in eval_data.batches()])
  assert len(labels) == 997
  host_model = build_model(config.model, image_size=28)
  logits = jax.jit(host_model.apply)(device_map.to_host(state.variables()),
                                     steps.standardize(images, spec))
  top1 = int(np.sum(np.argmax(logits, -1) == labels))
  assert result.top1_correct == top1


def test_train_step_compiles_once(tiny_config, caplog):
  config = tiny_config
  model = build_model(config.model, image_size=28, sync_bn=True)
  train_data = pipeline.TrainData(pipeline.Source(config.data), global_batch=16, seed=0)
  tx = optim.make_optimizer(config.optimizer, train_data.steps_per_epoch)
  schedule = optim.learning_rate_schedule(config.optimizer, train_data.steps_per_epoch)
  state = create_train_state(model, tx, (28, 28, 1), 0, device_map.replicated_sharding())
  step_fn = steps.make_train_step(model, tx, schedule, dataset_spec('fashion_mnist'),
                                  average_ema=False)
  batches = pipeline.prefetch_to_devices(train_data.batches(), 2)
  state, _ = step_fn(state, next(batches))
  with jax.log_compiles(True), caplog.at_level(logging.WARNING):
    for _ in range(3):
      state, metrics = step_fn(state, next(batches))
    jax.block_until_ready(metrics)
  compiles = [r.getMessage() for r in caplog.records if 'Compiling' in r.getMessage()]
  assert not compiles, compiles


def test_config_errors_are_one_line(tiny_config, tmp_path):
  config = tiny_config
  config.global_batch_size = 20
  with pytest.raises(ConfigError, match=r'global_batch_size=20 must be a positive multiple of the 8 devices'):
    train_and_evaluate(config, str(tmp_path))
  config.global_batch_size = 16
  config.model.activation = 'tanh'
  with pytest.raises(ConfigError, match="model.activation='tanh'"):
    train_and_evaluate(config, str(tmp_path))


def test_missing_imagenet_says_where_the_tar_files_go(tmp_path):
  config = mock_imagenet_config('bn_x5')
  config.data.data_dir = str(tmp_path)
  with pytest.raises(DataError, match='ILSVRC2012_img_train.tar.*prepare_data.py') as info:
    pipeline.Source(config.data)
  assert '\n' not in str(info.value)


def test_checkpoint_of_another_architecture_or_corrupt_is_refused_untouched(tiny_config, tmp_path):
  config = tiny_config
  config.num_train_steps = 1
  config.eval_every_steps = -1
  workdir = str(tmp_path)
  train_and_evaluate(config, workdir)
  checkpoint_dir = os.path.join(workdir, 'checkpoints')

  def listing():
    return sorted((os.path.relpath(os.path.join(d, f), checkpoint_dir),
                   os.path.getsize(os.path.join(d, f)), os.path.getmtime(os.path.join(d, f)))
                  for d, _, files in os.walk(checkpoint_dir) for f in files)

  before = listing()
  config.model.width = 1 / 8
  with pytest.raises(CheckpointError, match='holds another architecture') as info:
    train_and_evaluate(config, workdir)
  assert '\n' not in str(info.value)
  assert listing() == before

  config.model.width = 1 / 16
  meta_files = [f for f, _, _ in before if f.startswith('1/meta')]
  for f in meta_files:
    with open(os.path.join(checkpoint_dir, f), 'w') as handle:
      handle.write('{ not json')
  before = listing()
  with pytest.raises(CheckpointError, match='could not be read'):
    train_and_evaluate(config, workdir)
  assert listing() == before
