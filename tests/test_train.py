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
import orbax.checkpoint as ocp
import pytest
import tensorflow_datasets as tfds

from bn_repro.data import pipeline
from bn_repro.data.on_device import Augmentation, standardize
from bn_repro.errors import CheckpointError, ConfigError, DataError
from bn_repro.evaluation import exact, population
from bn_repro.evaluation.trained import load_trained
from bn_repro.models import build_model
from bn_repro.parallel import device_map
from bn_repro.training.checkpoints import Checkpoints
from bn_repro.loop.train import TrainingDiverged, train_and_evaluate
from bn_repro.training.recipes import TrainingRecipe
from bn_repro.workdir import Workdir

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
  config.train_for = '2 steps'
  config.hooks.eval.every = 'end'
  config.log_every = '1 steps'
  return config


@pytest.mark.parametrize('name', ['inception', 'bn_baseline', 'bn_x5', 'bn_x30', 'bn_x5_sigmoid'])
def test_paper_config_trains_on_mock_imagenet(name, tmp_path):
  config = mock_imagenet_config(name)
  with tfds.testing.mock_data(num_examples=MOCK_EXAMPLES):
    results = train_and_evaluate(config, str(tmp_path))
  assert results['step'] == 2
  assert results['eval_examples'] == MOCK_EXAMPLES
  assert 0 <= results['eval_top1'] <= results['eval_top5'] <= 1
  train_records = [r for r in Workdir(str(tmp_path)).read_metrics() if 'train_loss' in r]
  assert [r['step'] for r in train_records] == [1, 2]
  assert all(np.isfinite(r['train_loss']) for r in train_records)
  # The paper's rate is for batches of 32, scaled linearly to the global batch.
  expected_lr = config.optimizer.learning_rate * config.global_batch_size / 32
  assert train_records[0]['learning_rate'] == pytest.approx(expected_lr)
  assert Checkpoints(Workdir(str(tmp_path)).checkpoint_dir).latest_step() == 2
  assert any(f.startswith('events.out.tfevents') for f in os.listdir(tmp_path))
  assert Workdir(str(tmp_path)).load_config().name == name


def test_small_real_dataset_learns_and_records_targets(tiny_config, tmp_path):
  config = tiny_config
  config.train_for = '40 steps'
  config.hooks.eval.every = '20 steps'
  config.log_every = '10 steps'
  config.hooks.checkpoint.every = '20 steps'
  # 0.2 is twice chance. Learning is read with population statistics: at BN-x30's rate
  # the EMA of this tiny twin lags its weights, and whether its 40-step EMA scores above
  # chance depends on rounding (jax 0.10.2: 37%; jax 0.12: 10% on the VM of earlier
  # sessions, 28.5% on an AMD EPYC Zen 5 one). The population accuracy varies with the CPU
  # too: 34-35% on the earlier VM, 29.3% on the Zen 5 one (19.1% at step 20).
  config.hooks.targets.values = (0.2, 0.99)
  config.hooks.targets.metric = 'eval_population_top1'
  config.hooks.eval_population.every = '20 steps'
  config.hooks.eval_population.num_batches = 2
  results = train_and_evaluate(config, str(tmp_path))
  assert results['eval_examples'] == 256
  with open(tmp_path / 'targets.json') as f:
    reached = json.load(f)['reached']
  assert '0.2' in reached and '0.99' not in reached   # chance is 0.1
  assert reached['0.2']['step'] in (20, 40)
  evals = [r for r in Workdir(str(tmp_path)).read_metrics() if 'eval_top1' in r]
  assert [r['step'] for r in evals] == [20, 40]
  # Population-statistics evaluations: the step-40 one used batches 3 and 4 of
  # one training stream of seed + 1 (batches 1 and 2 served the step-20 one).
  population_records = [r for r in Workdir(str(tmp_path)).read_metrics()
                        if 'eval_population_top1' in r]
  assert [r['step'] for r in population_records] == [20, 40]
  run = load_trained(str(tmp_path))
  source = pipeline.Source(run.config.data)
  stream = device_map.prefetch(pipeline.TrainData(
      source, global_batch=config.global_batch_size, seed=config.seed + 1).batches(0), 2)
  for _ in range(2):
    next(stream)
  stats = population.compute(run.recipe.model, run.variables(), source.spec, stream, 2,
                             augmentation=Augmentation.from_config(config.data),
                             seed=config.seed + 1).stats
  direct = exact.evaluate(
      run.recipe.eval_step('population'),
      run.variables('population', population_stats=device_map.replicate(stats)),
      pipeline.EvalData(source, global_batch=config.eval_batch_size)).result
  assert population_records[-1]['eval_population_top1'] == pytest.approx(direct.top1, abs=1 / 256)
  assert population_records[-1]['eval_population_loss'] == pytest.approx(direct.loss, rel=1e-4)


def _params(workdir):
  """(step, meta, {'model': ..., 'training': ...}) of the latest checkpoint, as saved."""
  checkpoints = Checkpoints(Workdir(workdir).checkpoint_dir, read_only=True)
  step = checkpoints.latest_step()
  meta = checkpoints.read_meta(step)
  restored = {item: ocp.StandardCheckpointer().restore(os.path.join(checkpoints.path(step), item))
              for item in ('model', 'training')}
  return step, meta, restored


def test_resume_reaches_the_same_parameters_bitwise(tiny_config, tmp_path):
  """Stop at step 2, resume to 4: bitwise equal to a straight run to 4.

  Bitwise, because the data order and augmentation are a pure function of
  (seed, epoch, position), dropout keys derive from the step, and XLA on CPU
  runs the same compiled program deterministically.
  """
  config = tiny_config
  config.hooks.eval.every = 'end'
  config.model.dropout_rate = 0.3   # exercise the RNG too
  straight, resumed = str(tmp_path / 'straight'), str(tmp_path / 'resumed')
  train_and_evaluate(config, straight)
  config.train_for = '2 steps'
  train_and_evaluate(config, resumed)
  config.train_for = '4 steps'
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
          '--config.train_for=100000 steps', '--config.hooks.eval.every=end',
          '--config.hooks.checkpoint.every=100000 steps', '--config.log_every=1 steps']
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
  step = Checkpoints(Workdir(workdir).checkpoint_dir).latest_step()
  assert step is not None and step >= 1


def test_nan_stops_within_a_step_and_keeps_the_last_good_checkpoint(tiny_config, tmp_path):
  config = tiny_config
  config.hooks.eval.every = 'end'
  config.train_for = '2 steps'
  workdir = str(tmp_path)
  train_and_evaluate(config, workdir)     # a good checkpoint at step 2
  before = sorted(os.listdir(os.path.join(workdir, 'checkpoints')))
  config.train_for = '50 steps'
  config.optimizer.learning_rate = 1e30   # diverges at once
  with pytest.raises(TrainingDiverged, match=r'NaN/Inf at step [34] .*last checkpoint \(step 2\) is intact'):
    train_and_evaluate(config, workdir, allow_config_change=True)
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == before
  step, _, state = _params(workdir)
  assert step == 2 and all(np.isfinite(x).all() for x in jax.tree.leaves(state['model']['params']))


def test_eval_counts_every_example_once(tiny_config):
  """997 examples, global eval batch 64 on 8 devices: counts equal a direct computation."""
  config = tiny_config
  config.data.eval_split = 'test[:997]'
  recipe = TrainingRecipe(config, steps_per_epoch=100)
  state = recipe.init_state()
  source = pipeline.Source(config.data)
  eval_data = pipeline.EvalData(source, global_batch=64)
  assert eval_data.num_steps == 16 and eval_data.num_examples == 997
  result = exact.evaluate(recipe.eval_step('ema'), state.variables(), eval_data).result
  assert result.count == 997

  # Direct: one device, all examples at once, no padding.
  images = np.concatenate([b['image'][b['mask']] for b in eval_data.batches()])
  labels = np.concatenate([b['label'][b['mask']] for b in eval_data.batches()])
  assert len(labels) == 997
  host_model = build_model(config.model, image_size=28)
  logits = jax.jit(host_model.apply)(device_map.to_host(state.variables()),
                                     standardize(images, recipe.spec))
  top1 = int(np.sum(np.argmax(logits, -1) == labels))
  assert result.top1_correct == top1


def test_train_step_compiles_once(tiny_config, caplog):
  config = tiny_config
  train_data = pipeline.TrainData(pipeline.Source(config.data), global_batch=16, seed=0)
  recipe = TrainingRecipe(config, train_data.steps_per_epoch)
  state = recipe.init_state()
  step_fn = recipe.train_step
  batches = device_map.prefetch(train_data.batches(), 2)
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
  config.train_for = '1 steps'
  config.hooks.eval.every = 'end'
  workdir = str(tmp_path)
  train_and_evaluate(config, workdir)
  checkpoint_dir = os.path.join(workdir, 'checkpoints')

  def listing():
    return sorted((os.path.relpath(os.path.join(d, f), checkpoint_dir),
                   os.path.getsize(os.path.join(d, f)), os.path.getmtime(os.path.join(d, f)))
                  for d, _, files in os.walk(checkpoint_dir) for f in files)

  before = listing()
  config.model.width = 1 / 8
  with pytest.raises(ConfigError, match=r'holds a run of another config \(model.width'):
    train_and_evaluate(config, workdir)
  # Even when the change is allowed, the checkpoint of another architecture is refused.
  with pytest.raises(CheckpointError, match='holds another architecture') as info:
    train_and_evaluate(config, workdir, allow_config_change=True)
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
