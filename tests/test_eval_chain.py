"""Train -> population statistics -> evaluate (both statistics, all crops) -> ensemble."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds

from bn_repro import evaluators, population_stats
from bn_repro.errors import UserError
from bn_repro.evaluators import EvalSpec, ensemble_rows, top_k_errors
from bn_repro.train import train_and_evaluate
from tests.test_train import MOCK_EXAMPLES, mock_imagenet_config


def _train(config, workdir, steps=2):
  config.num_train_steps = steps
  config.eval_every_steps = -1
  train_and_evaluate(config, workdir)
  return workdir


def test_whole_chain_on_the_small_real_dataset(tiny_config, tmp_path, repo_root):
  config = tiny_config
  config.data.eval_split = 'test[:100]'   # 100 = 3 x 32 + 4: padded batches
  a = _train(config, str(tmp_path / 'a'))
  config.seed = 1
  config.model.dropout_rate = 0.1         # members may differ in their configs
  b = _train(config, str(tmp_path / 'b'))

  with pytest.raises(UserError, match=r'no population statistics for step 2 .*population_stats.py --workdir'):
    evaluators.evaluate_workdir(a, EvalSpec('population'))

  meta = population_stats.run(a, num_batches=3, batch_size=16, log=lambda *_: None)
  first, _ = population_stats.load(a, 2)
  population_stats.run(a, num_batches=3, batch_size=16, log=lambda *_: None)
  again, _ = population_stats.load(a, 2)
  for x, y in zip(_leaves(first), _leaves(again)):
    np.testing.assert_array_equal(x, y)        # same arguments, identical values
  assert meta['num_batches'] == 3 and meta['checkpoint_step'] == 2 and meta['seed'] == 0
  assert meta['values_per_bn_batch']['stem/conv1/bn'] == 16 * 28 * 28
  assert os.path.exists(os.path.join(a, 'population_stats', '2', 'ema_gap.json'))

  # The same statistics on one device (a separate process) as on 8.
  one_device = subprocess.run(
      [sys.executable, 'scripts/population_stats.py', '--workdir', a, '--num_batches=3',
       '--batch_size=16'], cwd=repo_root, env=dict(os.environ, XLA_FLAGS=''),
      capture_output=True, text=True, timeout=300)
  assert one_device.returncode == 0, one_device.stderr[-2000:]
  assert 'ratio' in one_device.stdout and 'mean over layers' in one_device.stdout
  on_one, _ = population_stats.load(a, 2)
  for x, y in zip(_leaves(first), _leaves(on_one)):
    np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5)

  records = {}
  for stats in ('ema', 'population'):
    for crops in (1, 10, 144):
      record = evaluators.evaluate_workdir(a, EvalSpec(stats, crops))
      assert record['examples'] == 100, (stats, crops)
      assert 0 <= record['top1_error'] <= 1
      records[stats, crops] = record
  assert records['population', 1]['top1_error'] != records['ema', 1]['top1_error'] or \
      records['population', 1]['loss'] != records['ema', 1]['loss']
  with open(os.path.join(a, 'eval', 'test__100__population_144crop_step2.json')) as f:
    assert json.load(f)['crops'] == 144

  # An ensemble of one is that model; of two, the mean of their probabilities.
  population_stats.run(b, num_batches=3, batch_size=16, log=lambda *_: None)
  spec = EvalSpec('population', 10)
  solo = evaluators.ensemble([a], spec, log=lambda *_: None)
  assert solo['rows'][-1]['top1_error'] == pytest.approx(records['population', 10]['top1_error'])
  assert solo['rows'][-1]['top5_error'] == pytest.approx(records['population', 10]['top5_error'])
  messages = []
  pair = evaluators.ensemble([a, b], spec, log=messages.append)
  assert any('reusing' in m for m in messages)   # a's probabilities were cached
  _, probs_a, labels = evaluators.cached_probs(a, spec, 'test[:100]')
  _, probs_b, _ = evaluators.cached_probs(b, spec, 'test[:100]')
  expected = top_k_errors((probs_a + probs_b) / 2, labels)
  assert pair['rows'][-1]['top1_error'] == expected['top1_error']
  assert [r['member'] for r in pair['rows']] == ['tiny', 'tiny', 'ensemble of 2']


def test_chain_on_mock_imagenet(tmp_path):
  config = mock_imagenet_config('bn_x30')
  workdir = str(tmp_path)
  with tfds.testing.mock_data(num_examples=MOCK_EXAMPLES):
    _train(config, workdir)
    population_stats.run(workdir, num_batches=2, batch_size=16, log=lambda *_: None)
    for stats, crops in (('population', 144), ('ema', 10), ('population', 1)):
      record = evaluators.evaluate_workdir(workdir, EvalSpec(stats, crops))
      assert record['examples'] == MOCK_EXAMPLES
    result = evaluators.ensemble([workdir], EvalSpec('population', 1), log=lambda *_: None)
  assert result['rows'][0]['top1_error'] == result['rows'][1]['top1_error']


def test_ensemble_of_two_known_probability_tables():
  labels = np.array([0, 1, 2, 1])
  p1 = np.array([[.6, .3, .1], [.5, .4, .1], [.1, .2, .7], [.1, .8, .1]])
  p2 = np.array([[.2, .7, .1], [.1, .8, .1], [.5, .3, .2], [.2, .6, .2]])
  record = lambda name: {'name': name, 'workdir': name, 'checkpoint_step': 1}
  rows = ensemble_rows([(record('m1'), p1, labels), (record('m2'), p2, labels)])
  assert rows[0]['top1_error'] == pytest.approx(0.25)    # m1 misses example 1
  assert rows[1]['top1_error'] == pytest.approx(0.5)     # m2 misses 0 and 2
  # mean: [.4 .5 .1] (wrong), [.3 .6 .1], [.3 .25 .45], [.15 .7 .15]
  assert rows[2]['top1_error'] == pytest.approx(0.25)
  assert rows[2]['member'] == 'ensemble of 2'
  with pytest.raises(UserError, match='other examples'):
    ensemble_rows([(record('m1'), p1, labels), (record('m2'), p2, labels[::-1])])


def test_ensemble_refuses_members_with_other_label_spaces(tmp_path):
  from configs import tiny
  for name, classes in (('a', 10), ('b', 11)):
    config = tiny.get_config()
    config.model.num_classes = classes
    os.makedirs(tmp_path / name)
    with open(tmp_path / name / 'config.json', 'w') as f:
      f.write(config.to_json_best_effort())
  with pytest.raises(UserError, match='differ in num_classes'):
    evaluators.ensemble([str(tmp_path / 'a'), str(tmp_path / 'b')], EvalSpec('ema'))


def _leaves(tree):
  import jax
  return [np.asarray(x) for x in jax.tree.leaves(tree)]
