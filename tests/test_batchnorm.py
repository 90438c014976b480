"""BatchNorm against an independent numpy reference, flax's nn.BatchNorm, and across devices."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bn_repro.errors import ConfigError
from bn_repro.models.batchnorm import (BATCH_MOMENTS, EMA_STATS, POPULATION_STATS,
                                       BatchNorm, debiased_ema)
from bn_repro.parallel import device_map

EPS = 1e-3


# --- numpy reference: the paper's Algorithm 1 and its backward pass, in float64.

def ref_forward(x, gamma, beta, axes, eps=EPS):
  mu = x.mean(axes)
  var = ((x - mu) ** 2).mean(axes)
  return gamma * (x - mu) / np.sqrt(var + eps) + beta, mu, var


def ref_backward(x, gamma, dy, axes, eps=EPS):
  """dL/dx, dL/dgamma, dL/dbeta from the paper's chain-rule equations."""
  m = np.prod([x.shape[a] for a in axes])
  mu = x.mean(axes)
  var = ((x - mu) ** 2).mean(axes)
  inv_std = 1 / np.sqrt(var + eps)
  xhat = (x - mu) * inv_std
  dxhat = dy * gamma
  dvar = np.sum(dxhat * (x - mu) * -0.5 * inv_std ** 3, axes)
  dmu = np.sum(-dxhat * inv_std, axes) + dvar * np.sum(-2 * (x - mu), axes) / m
  dx = dxhat * inv_std + dvar * 2 * (x - mu) / m + dmu / m
  return dx, np.sum(dy * xhat, axes), np.sum(dy, axes)


SHAPES = {'dense': ((16, 5), (0,)), 'conv': ((4, 3, 3, 5), (0, 1, 2))}


def _inputs(shape, seed=0):
  rng = np.random.RandomState(seed)
  x = rng.randn(*shape) * 2 + 0.7
  gamma = rng.rand(shape[-1]) + 0.5
  beta = rng.randn(shape[-1])
  dy = rng.randn(*shape)
  return x, gamma, beta, dy


def _variables(gamma, beta, mean=None, var=None):
  c = len(gamma)
  return {
      'params': {'scale': jnp.asarray(gamma, jnp.float32),
                 'bias': jnp.asarray(beta, jnp.float32)},
      EMA_STATS: {'mean': jnp.zeros(c) if mean is None else jnp.asarray(mean, jnp.float32),
                  'var': jnp.ones(c) if var is None else jnp.asarray(var, jnp.float32)},
  }


@pytest.mark.parametrize('kind', SHAPES)
def test_train_forward_and_gradients_match_numpy_reference(kind):
  shape, axes = SHAPES[kind]
  x, gamma, beta, dy = _inputs(shape)
  bn = BatchNorm(epsilon=EPS)

  def loss(x, params):
    y = bn.apply({'params': params, EMA_STATS: _variables(gamma, beta)[EMA_STATS]},
                 x, 'batch')
    return jnp.sum(y * dy), y

  params = _variables(gamma, beta)['params']
  (_, y), (dx, dparams) = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(
      jnp.asarray(x, jnp.float32), params)

  y_ref, _, _ = ref_forward(x, gamma, beta, axes)
  dx_ref, dgamma_ref, dbeta_ref = ref_backward(x, gamma, dy, axes)
  np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(dx, dx_ref, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(dparams['scale'], dgamma_ref, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(dparams['bias'], dbeta_ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('kind', SHAPES)
def test_gradients_match_finite_differences(kind):
  shape, axes = SHAPES[kind]
  x, gamma, beta, dy = _inputs(shape, seed=1)
  bn = BatchNorm(epsilon=EPS)
  stats = _variables(gamma, beta)[EMA_STATS]

  def loss(x, gamma):
    params = {'scale': gamma, 'bias': jnp.asarray(beta, jnp.float32)}
    return jnp.sum(bn.apply({'params': params, EMA_STATS: stats}, x, 'batch') * dy)

  dx, dgamma = jax.grad(loss, argnums=(0, 1))(jnp.asarray(x, jnp.float32),
                                               jnp.asarray(gamma, jnp.float32))

  def ref_loss(x, gamma):
    return np.sum(ref_forward(x, gamma, beta, axes)[0] * dy)

  h = 1e-5
  rng = np.random.RandomState(2)
  for flat in rng.choice(x.size, 6, replace=False):
    idx = np.unravel_index(flat, x.shape)
    plus, minus = x.copy(), x.copy()
    plus[idx] += h
    minus[idx] -= h
    numeric = (ref_loss(plus, gamma) - ref_loss(minus, gamma)) / (2 * h)
    np.testing.assert_allclose(dx[idx], numeric, rtol=2e-3, atol=2e-4)
  for c in range(len(gamma)):
    plus, minus = gamma.copy(), gamma.copy()
    plus[c] += h
    minus[c] -= h
    numeric = (ref_loss(x, plus) - ref_loss(x, minus)) / (2 * h)
    np.testing.assert_allclose(dgamma[c], numeric, rtol=2e-3, atol=2e-4)


@pytest.mark.parametrize('kind', SHAPES)
@pytest.mark.parametrize('stats', ['ema', 'population'])
def test_inference_forward_matches_reference_with_stored_statistics(kind, stats):
  shape, _ = SHAPES[kind]
  x, gamma, beta, _ = _inputs(shape, seed=3)
  mean, var = np.linspace(-1, 1, shape[-1]), np.linspace(0.5, 3, shape[-1])
  variables = _variables(gamma, beta)
  collection = EMA_STATS if stats == 'ema' else POPULATION_STATS
  variables[collection] = {'mean': jnp.asarray(mean, jnp.float32),
                           'var': jnp.asarray(var, jnp.float32)}
  y = BatchNorm(epsilon=EPS).apply(variables, jnp.asarray(x, jnp.float32), stats)
  expected = gamma * (x - mean) / np.sqrt(var + EPS) + beta
  np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)


def test_inference_never_uses_the_batch_statistics():
  """Each example's output must not depend on the rest of the batch."""
  x, gamma, beta, _ = _inputs((16, 5), seed=4)
  variables = _variables(gamma, beta, mean=np.full(5, 0.3), var=np.full(5, 2.0))
  bn = BatchNorm(epsilon=EPS)
  full = bn.apply(variables, jnp.asarray(x, jnp.float32), 'ema')
  shifted = x.copy()
  shifted[1:] = shifted[1:] * 10 + 50   # change every other example
  alone = bn.apply(variables, jnp.asarray(shifted, jnp.float32), 'ema')
  np.testing.assert_allclose(full[0], alone[0], rtol=1e-6)
  # and it is not the batch-normalized value
  batch_mode = bn.apply(variables, jnp.asarray(x, jnp.float32), 'batch')
  assert np.abs(np.asarray(full) - np.asarray(batch_mode)).max() > 0.1


def test_population_mode_without_population_statistics_is_a_clear_error():
  x, gamma, beta, _ = _inputs((4, 5))
  with pytest.raises(ValueError, match='population_stats.py'):
    BatchNorm().apply(_variables(gamma, beta), jnp.asarray(x, jnp.float32), 'population')


@pytest.mark.parametrize('kind', SHAPES)
def test_matches_flax_batchnorm_outputs_and_ema_updates(kind):
  shape, _ = SHAPES[kind]
  x, gamma, beta, _ = _inputs(shape, seed=5)
  x = jnp.asarray(x, jnp.float32)
  ours = BatchNorm(momentum=0.9, epsilon=EPS)
  theirs = nn.BatchNorm(momentum=0.9, epsilon=EPS)
  variables = _variables(gamma, beta, mean=np.full(5, 0.2), var=np.full(5, 1.5))
  flax_vars = {'params': variables['params'], 'batch_stats': variables[EMA_STATS]}

  y, updated = ours.apply(variables, x, 'batch', mutable=[EMA_STATS])
  y_flax, updated_flax = theirs.apply(flax_vars, x, use_running_average=False,
                                      mutable=['batch_stats'])
  np.testing.assert_allclose(y, y_flax, rtol=1e-5, atol=1e-5)
  for k in ('mean', 'var'):
    np.testing.assert_allclose(updated[EMA_STATS][k], updated_flax['batch_stats'][k],
                               rtol=1e-5, atol=1e-6)

  inference_vars = dict(variables, **{EMA_STATS: updated[EMA_STATS]})
  y_inf = ours.apply(inference_vars, x, 'ema')
  y_inf_flax = theirs.apply({'params': variables['params'], 'batch_stats': updated_flax['batch_stats']},
                            x, use_running_average=True)
  np.testing.assert_allclose(y_inf, y_inf_flax, rtol=1e-5, atol=1e-5)


def test_batch_moments_are_recorded_with_their_count():
  x, gamma, beta, _ = _inputs((4, 3, 3, 5), seed=6)
  _, state = BatchNorm().apply(_variables(gamma, beta), jnp.asarray(x, jnp.float32),
                               'batch', mutable=[BATCH_MOMENTS])
  moments = state[BATCH_MOMENTS]
  _, mu, var = ref_forward(x, gamma, beta, (0, 1, 2))
  np.testing.assert_allclose(moments['mean'], mu, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(moments['var'], var, rtol=1e-4, atol=1e-6)
  assert float(moments['count']) == 4 * 3 * 3


def test_per_activation_statistics_are_per_position():
  x, _, _, _ = _inputs((6, 2, 2, 3), seed=7)
  bn = BatchNorm(per_activation=True)
  variables = bn.init(jax.random.key(0), jnp.asarray(x, jnp.float32), 'ema')
  assert variables['params']['scale'].shape == (2, 2, 3)
  y = bn.apply(variables, jnp.asarray(x, jnp.float32), 'batch')
  expected = (x - x.mean(0)) / np.sqrt(x.var(0) + 1e-3)
  np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-5)


# --- cross-device statistics

def _device_run(x, dy, gamma, beta, group_size, n_devices):
  """BN train forward + gradients of sum(y * dy) on n_devices, x split evenly."""
  groups = device_map.bn_groups(group_size).axis_index_groups if n_devices == 8 else None
  bn = BatchNorm(epsilon=EPS, axis_name=device_map.AXIS, axis_index_groups=groups)
  stats = _variables(gamma, beta)[EMA_STATS]

  def per_device(params, x, dy):
    def loss(params, x):
      y, state = bn.apply({'params': params, EMA_STATS: stats}, x, 'batch',
                          mutable=[EMA_STATS, BATCH_MOMENTS])
      return jnp.sum(y * dy), (y, state)
    (_, (y, state)), (dparams, dx) = jax.value_and_grad(
        loss, argnums=(0, 1), has_aux=True)(params, x)
    return y, dx, device_map.psum(dparams), state[BATCH_MOMENTS]

  params = _variables(gamma, beta)['params']
  fn = jax.pmap(per_device, axis_name=device_map.AXIS, in_axes=(None, 0, 0),
                devices=jax.devices()[:n_devices])
  split = lambda a: jnp.asarray(a, jnp.float32).reshape((n_devices, -1) + a.shape[1:])
  y, dx, dparams, moments = fn(params, split(x), split(dy))
  return (np.asarray(y).reshape(x.shape), np.asarray(dx).reshape(x.shape),
          jax.tree.map(lambda a: np.asarray(a)[0], dparams), moments)


@pytest.mark.parametrize('kind', SHAPES)
def test_eight_devices_equal_one_device_with_the_whole_batch(kind):
  shape, _ = SHAPES[kind]
  shape = (8 * 2,) + shape[1:]  # b = 2 examples per device
  x, gamma, beta, dy = _inputs(shape, seed=8)
  y8, dx8, dp8, m8 = _device_run(x, dy, gamma, beta, group_size=0, n_devices=8)
  y1, dx1, dp1, m1 = _device_run(x, dy, gamma, beta, group_size=0, n_devices=1)
  np.testing.assert_allclose(y8, y1, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(dx8, dx1, rtol=1e-4, atol=1e-5)
  for k in dp1:
    np.testing.assert_allclose(dp8[k], dp1[k], rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(m8['mean'][3], m1['mean'][0], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(m8['var'][3], m1['var'][0], rtol=1e-4, atol=1e-6)
  assert float(m8['count'][0]) == float(m1['count'][0]) == x.size // shape[-1]


def test_groups_of_two_devices_each_match_their_own_examples():
  shape = (16, 3, 3, 4)  # 2 examples per device, 4 per group
  x, gamma, beta, dy = _inputs(shape, seed=9)
  y8, dx8, _, moments = _device_run(x, dy, gamma, beta, group_size=2, n_devices=8)
  for g in range(4):
    part = slice(4 * g, 4 * g + 4)
    y_ref, mu, var = ref_forward(x[part], gamma, beta, (0, 1, 2))
    dx_ref, _, _ = ref_backward(x[part], gamma, dy[part], (0, 1, 2))
    np.testing.assert_allclose(y8[part], y_ref, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(dx8[part], dx_ref, rtol=1e-3, atol=1e-5)
    for d in (2 * g, 2 * g + 1):
      np.testing.assert_allclose(moments['mean'][d], mu, rtol=1e-5, atol=1e-6)
      assert float(moments['count'][d]) == 4 * 9


def test_group_size_must_divide_the_device_count():
  with pytest.raises(ConfigError, match='group_size=3'):
    device_map.bn_groups(3)
  assert device_map.bn_groups(0).axis_index_groups is None
  assert device_map.bn_groups(0).spans_all_devices
  assert device_map.bn_groups(4).axis_index_groups == ((0, 1, 2, 3), (4, 5, 6, 7))
  assert not device_map.bn_groups(4).spans_all_devices
  assert device_map.bn_groups(1).axis_name is None          # each device alone
  assert device_map.bn_groups(8) == device_map.bn_groups(0)  # all 8 devices


def test_debiased_ema_is_the_weighted_mean_of_the_batch_statistics():
  """After t training updates, the debiased EMA equals sum_i w_i x_i / sum_i w_i with
  w_i = (1 - m) m^(t - i): the initial (0, 1) no longer counts."""
  momentum, steps = 0.9, 5
  bn = BatchNorm(momentum=momentum)
  rng = np.random.RandomState(11)
  batches = [rng.randn(16, 3) * (i + 1) + 2 * i for i in range(steps)]
  gamma, beta = np.ones(3), np.zeros(3)
  ema = _variables(gamma, beta)[EMA_STATS]
  for x in batches:
    _, updated = bn.apply({'params': _variables(gamma, beta)['params'], EMA_STATS: ema},
                          jnp.asarray(x, jnp.float32), 'batch', mutable=[EMA_STATS])
    ema = updated[EMA_STATS]
  weights = np.array([(1 - momentum) * momentum ** (steps - 1 - i) for i in range(steps)])
  means = np.array([x.mean(0) for x in batches])
  variances = np.array([x.var(0) for x in batches])
  debiased = debiased_ema({'bn': ema}, steps, momentum)['bn']
  np.testing.assert_allclose(debiased['mean'], weights @ means / weights.sum(), rtol=1e-5)
  np.testing.assert_allclose(debiased['var'], weights @ variances / weights.sum(), rtol=1e-5)
  # The plain EMA is still pulled towards its start: 0.9^5 = 59% of (0, 1).
  assert np.abs(np.asarray(ema['mean']) - weights @ means / weights.sum()).min() > 0.5
