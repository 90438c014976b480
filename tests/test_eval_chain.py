"""Train -> population statistics -> evaluate (both statistics, all crops) -> ensemble."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds

from bn_repro.errors import UserError
from bn_repro.evaluation import ensemble, population
from bn_repro.evaluation.checkpoint_population import compute_for_checkpoint
from bn_repro.evaluation.ensemble import ensemble_rows, top_k_errors
from bn_repro.evaluation.evaluators import (EvalSpec, WorkdirEvaluation, evaluate_workdir,
                                           saved_evaluation)
from bn_repro.loop.train import train_and_evaluate
from bn_repro.workdir import Workdir
from tests.test_train import MOCK_EXAMPLES, mock_imagenet_config

QUIET = {'log': lambda *_: None}


def _train(config, workdir, steps=2):
  config.train_for = f'{steps} steps'
  config.hooks.eval.every = 'end'
  train_and_evaluate(config, workdir)
  return workdir


def _check_against_probabilities(evaluation):
  """The device-side masked counts agree with the gathered per-example probabilities."""
  expected = top_k_errors(evaluation.probs, evaluation.labels)
  assert evaluation.record['examples'] == expected['examples'] == len(evaluation.labels)
  assert evaluation.record['top1_error'] == pytest.approx(expected['top1_error'])
  assert evaluation.record['top5_error'] == pytest.approx(expected['top5_error'])


def test_whole_chain_on_the_small_real_dataset(tiny_config, tmp_path, repo_root):
  config = tiny_config
  config.data.eval_split = 'test[:100]'   # 100 = 64 + 36: a padded last batch
  a = _train(config, str(tmp_path / 'a'))
  config.seed = 1
  config.model.dropout_rate = 0.1         # members may differ in their configs
  b = _train(config, str(tmp_path / 'b'))

  with pytest.raises(UserError, match=r'no population statistics for step 2 .*population_stats.py --workdir'):
    evaluate_workdir(a, EvalSpec('population'))

  meta = compute_for_checkpoint(a, num_batches=3, batch_size=16, **QUIET)
  first, _ = population.load(Workdir(a), 2)
  compute_for_checkpoint(a, num_batches=3, batch_size=16, **QUIET)
  again, _ = population.load(Workdir(a), 2)
  for x, y in zip(_leaves(first), _leaves(again)):
    np.testing.assert_array_equal(x, y)        # same arguments, identical values
  assert meta['num_batches'] == 3 and meta['checkpoint_step'] == 2 and meta['seed'] == 0
  assert meta['values_per_bn_batch']['stem/conv1/bn'] == 16 * 28 * 28
  assert os.path.exists(os.path.join(a, 'population_stats', '2', 'ema_gap.json'))

  # The same statistics on one device (a separate process) as on 8.
  one_device = subprocess.run(
      [sys.executable, 'scripts/population_stats.py', '--workdir', a, '--num_batches=3',
       '--batch_size=16', '--time_eval_pass'], cwd=repo_root, env=dict(os.environ, XLA_FLAGS=''),
      capture_output=True, text=True, timeout=300)
  assert one_device.returncode == 0, one_device.stderr[-2000:]
  assert 'eval pass over the same images' in one_device.stdout
  assert 'mean over layers' in one_device.stdout
  on_one, _ = population.load(Workdir(a), 2)
  for x, y in zip(_leaves(first), _leaves(on_one)):
    np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5)

  records = {}
  # 144 crops once: on square 28x28 images they are degenerate, and the mock-ImageNet
  # chain below runs them on ImageNet's own preprocessing.
  for stats, crops in (('ema', 1), ('ema', 10), ('population', 1), ('population', 10),
                       ('population', 144)):
    evaluation = evaluate_workdir(a, EvalSpec(stats, crops), save_probs=True)
    assert evaluation.record['examples'] == 100, (stats, crops)
    _check_against_probabilities(evaluation)
    records[stats, crops] = evaluation.record
  # One crop with the EMA is exactly the training loop's own final evaluation.
  results = Workdir(a).read_results()
  assert records['ema', 1]['top1'] == results['eval_top1']
  assert records['ema', 1]['loss'] == pytest.approx(results['eval_loss'], rel=1e-5)
  assert records['population', 1]['top1_error'] != records['ema', 1]['top1_error'] or \
      records['population', 1]['loss'] != records['ema', 1]['loss']
  with open(os.path.join(a, 'eval', 'test__100__population_144crop_step2.json')) as f:
    assert json.load(f)['crops'] == 144

  # An ensemble of two: the mean of their probabilities; a's were saved above and are reused.
  compute_for_checkpoint(b, num_batches=3, batch_size=16, **QUIET)
  spec = EvalSpec('population', 10)
  messages = []
  pair = ensemble.ensemble([a, b], spec, log=messages.append)
  assert messages[0].startswith('reusing') and messages[1].startswith('evaluating')
  saved_a = saved_evaluation(a, spec, 'test[:100]')
  saved_b = saved_evaluation(b, spec, 'test[:100]')
  expected = top_k_errors((saved_a.probs + saved_b.probs) / 2, saved_a.labels)
  assert pair['rows'][-1]['top1_error'] == expected['top1_error']
  assert [r['member'] for r in pair['rows']] == ['tiny', 'tiny', 'ensemble of 2']
  # New population statistics make a's saved probabilities stale: they are not reused.
  compute_for_checkpoint(a, num_batches=3, batch_size=16, seed=1, **QUIET)
  assert saved_evaluation(a, spec, 'test[:100]') is None
  messages = []
  ensemble.ensemble([a, b], spec, log=messages.append)
  assert messages[0].startswith('evaluating') and messages[1].startswith('reusing')


def test_chain_on_mock_imagenet(tmp_path):
  config = mock_imagenet_config('bn_x30')
  workdir = str(tmp_path)
  with tfds.testing.mock_data(num_examples=MOCK_EXAMPLES):
    _train(config, workdir)
    compute_for_checkpoint(workdir, num_batches=2, batch_size=16, **QUIET)
    for stats, crops in (('population', 144), ('ema', 10), ('population', 1)):
      evaluation = evaluate_workdir(workdir, EvalSpec(stats, crops), save_probs=True)
      assert evaluation.record['examples'] == MOCK_EXAMPLES
      assert evaluation.probs.shape == (MOCK_EXAMPLES, 1000)
      _check_against_probabilities(evaluation)


def test_ensemble_of_two_known_probability_tables():
  labels = np.array([0, 1, 2, 1])
  p1 = np.array([[.6, .3, .1], [.5, .4, .1], [.1, .2, .7], [.1, .8, .1]])
  p2 = np.array([[.2, .7, .1], [.1, .8, .1], [.5, .3, .2], [.2, .6, .2]])
  member = lambda name, probs, labels: WorkdirEvaluation(
      {'name': name, 'workdir': name, 'checkpoint_step': 1}, probs, labels)
  rows = ensemble_rows([member('m1', p1, labels), member('m2', p2, labels)])
  assert rows[0]['top1_error'] == pytest.approx(0.25)    # m1 misses example 1
  assert rows[1]['top1_error'] == pytest.approx(0.5)     # m2 misses 0 and 2
  # mean: [.4 .5 .1] (wrong), [.3 .6 .1], [.3 .25 .45], [.15 .7 .15]
  assert rows[2]['top1_error'] == pytest.approx(0.25)
  assert rows[2]['member'] == 'ensemble of 2'
  with pytest.raises(UserError, match='other examples'):
    ensemble_rows([member('m1', p1, labels), member('m2', p2, labels[::-1])])


def test_ensemble_refuses_members_with_other_label_spaces(tmp_path):
  from configs import tiny
  for name, classes in (('a', 10), ('b', 11)):
    config = tiny.get_config()
    config.model.num_classes = classes
    os.makedirs(tmp_path / name)
    with open(tmp_path / name / 'config.json', 'w') as f:
      f.write(config.to_json_best_effort())
  with pytest.raises(UserError, match='differ in num_classes'):
    ensemble.ensemble([str(tmp_path / 'a'), str(tmp_path / 'b')], EvalSpec('ema'))


def _leaves(tree):
  import jax
  return [np.asarray(x) for x in jax.tree.leaves(tree)]
