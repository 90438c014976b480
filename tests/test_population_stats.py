"""Algorithm 2: population statistics against a direct numpy computation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bn_repro.data.on_device import standardize
from bn_repro.data.specs import dataset_spec
from bn_repro.evaluation import population as population_stats
from bn_repro.models import build_model
from bn_repro.models.batchnorm import POPULATION_STATS
from bn_repro.parallel import device_map
from bn_repro.training.recipes import TrainingRecipe

SPEC = dataset_spec('fashion_mnist')


def _bn_inputs(model, variables, images):
  """{layer path: the BN layer's input} on one device, with batch statistics."""
  _, state = model.apply(variables, standardize(images, SPEC), train=False, stats='batch',
                         capture_intermediates=True, mutable=['intermediates'])
  found = {}

  def walk(tree, path):
    for key, value in tree.items():
      if key == 'conv' and isinstance(value, dict) and '__call__' in value:
        found['/'.join(path)] = np.asarray(value['__call__'][0], np.float64)
      elif isinstance(value, dict):
        walk(value, path + (key,))

  walk(state['intermediates'], ())
  return found


def _numpy_population(per_batch_inputs):
  """Algorithm 2 by hand: mean of batch means, m/(m-1) times the mean of biased variances."""
  result = {}
  for layer in per_batch_inputs[0]:
    xs = [b[layer] for b in per_batch_inputs]
    m = np.prod(xs[0].shape[:-1])
    means = [x.mean(axis=(0, 1, 2)) for x in xs]
    variances = [x.var(axis=(0, 1, 2)) for x in xs]
    result[layer] = (np.mean(means, 0), m / (m - 1) * np.mean(variances, 0))
  return result


def _flat(stats):
  out = {}

  def walk(tree, path):
    if 'mean' in tree and not isinstance(tree['mean'], dict):
      out['/'.join(path)] = (np.asarray(tree['mean']), np.asarray(tree['var']))
      return
    for k, v in tree.items():
      walk(v, path + (k,))

  walk(stats, ())
  return {k.rsplit('/bn', 1)[0]: v for k, v in out.items()}


@pytest.fixture(scope='module')
def trained_tiny():
  from configs import tiny
  config = tiny.get_config()
  state = TrainingRecipe(config, steps_per_epoch=100).init_state()
  # Move away from the initialization so that every layer has non-trivial statistics.
  rng = np.random.RandomState(0)
  params = jax.tree.map(lambda p: p * (1 + 0.1 * rng.randn(*p.shape).astype(np.float32)),
                        device_map.to_host(state.params))
  state = state.replace(params=device_map.replicate(params))
  batches = [{'image': rng.randint(0, 256, (16, 28, 28, 1)).astype(np.uint8),
              'label': rng.randint(0, 10, 16).astype(np.int32)} for _ in range(3)]
  return config, state, batches


@pytest.mark.parametrize('group_size', [0, 2])
def test_population_statistics_equal_numpy_over_the_same_batches(trained_tiny, group_size):
  config, state, batches = trained_tiny
  config = config.copy_and_resolve_references()
  config.model.bn.group_size = group_size
  model = TrainingRecipe(config, steps_per_epoch=100).model
  variables = state.variables()
  computed = population_stats.compute(
      model, variables, SPEC, iter(device_map.shard(b) for b in batches), len(batches))
  stats, counts = computed.stats, computed.values_per_bn_batch

  # Reference: every BN batch (a group's examples) on one device, in numpy.
  host_model = build_model(config.model, image_size=28)
  host_vars = device_map.to_host(variables)
  group_examples = 16 if group_size == 0 else 2 * group_size
  bn_batches = [b['image'][i:i + group_examples] for b in batches
                for i in range(0, 16, group_examples)]
  inputs = [_bn_inputs(host_model, host_vars, jnp.asarray(x)) for x in bn_batches]
  expected = _numpy_population(inputs)
  got = _flat(stats)
  assert set(got) == set(expected) and len(got) > 60
  for layer, (mean, var) in expected.items():
    np.testing.assert_allclose(got[layer][0], mean, rtol=1e-4, atol=1e-5, err_msg=layer)
    np.testing.assert_allclose(got[layer][1], var, rtol=1e-4, atol=1e-5, err_msg=layer)
  # m counts the values pooled per channel in one BN batch: examples x positions.
  assert counts['stem/conv1/bn'] == group_examples * 28 * 28
  assert counts['inception_5b/b1x1/bn'] == group_examples * 4 * 4


def test_inference_with_population_statistics_uses_no_batch_statistics(trained_tiny):
  config, state, batches = trained_tiny
  model = TrainingRecipe(config, steps_per_epoch=100).model
  stats = population_stats.compute(
      model, state.variables(), SPEC, iter(device_map.shard(b) for b in batches), 3).stats
  host_model = build_model(config.model, image_size=28)
  variables = dict(device_map.to_host(state.variables()), **{POPULATION_STATS: stats})
  images = standardize(batches[0]['image'], SPEC)
  apply = jax.jit(lambda v, x: host_model.apply(v, x, stats='population'))
  full = apply(variables, images)
  changed = images.at[1:].set(images[1:] * 3 + 1)
  np.testing.assert_allclose(apply(variables, changed)[0], full[0], rtol=1e-5, atol=1e-5)
  # ... and differs from normalizing with the EMA (untrained here: zeros and ones).
  assert np.abs(np.asarray(full) - np.asarray(
      jax.jit(lambda v, x: host_model.apply(v, x, stats='ema'))(variables, images))).max() > 1e-3


def test_ema_gap_is_zero_for_identical_statistics_and_grows_with_the_gap():
  pop = {'a': {'bn': {'mean': np.zeros(3), 'var': np.ones(3)}}}
  same = population_stats.ema_gap(pop, pop, 1e-3)
  assert same == [{'layer': 'a/bn', 'mean_gap': 0.0, 'var_log_ratio': 0.0}]
  shifted = {'a': {'bn': {'mean': np.full(3, 0.5), 'var': np.full(3, np.e - 1e-3 * (1 - np.e))}}}
  (row,) = population_stats.ema_gap(shifted, pop, 1e-3)
  assert row['mean_gap'] == pytest.approx(0.5 / np.sqrt(1 + 1e-3))
  assert row['var_log_ratio'] == pytest.approx(1.0, rel=1e-6)
  assert 'mean over layers' in population_stats.format_gap_table([row])


def test_finalize_applies_the_unbiased_factor():
  sums = {'l': {'mean': np.array([2.0, 4.0]), 'var': np.array([1.0, 3.0]), 'count': np.array(10.0)}}
  out = population_stats.finalize(sums, num_batches=2)
  np.testing.assert_allclose(out['l']['mean'], [1.0, 2.0])
  np.testing.assert_allclose(out['l']['var'], np.array([0.5, 1.5]) * 5 / 4)
