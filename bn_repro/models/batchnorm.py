"""The Batch Normalizing Transform (paper Algorithm 1) and its two stored statistics.

One BatchNorm layer normalizes with one of three sets of statistics, chosen per
call by `stats`:

- 'batch': this mini-batch's mean and biased variance (Algorithm 1), pooled
  over every axis but the features (batch and, for conv layers, all spatial
  positions) and averaged over the devices of the layer's BN group. This is
  the training mode; gradients flow through the mean and the variance.
- 'ema': the exponential moving averages collected while training (variable
  collection EMA_STATS). The paper uses these only to track accuracy during
  training.
- 'population': population statistics from Algorithm 2 (variable collection
  POPULATION_STATS), computed after training by `bn_repro.evaluation.population`.

For evaluation there is a third choice, 'ema_debiased': the EMA with the
weight of its initial value removed (`debiased_ema`), which the layer uses in
its 'ema' mode. Early in training, or with a momentum close to 1, the plain
EMA still holds much of its initial (0, 1); the debiased one does not.

In 'batch' mode the layer also records the batch moments it normalized with
(collection BATCH_MOMENTS: mean, biased var, and count = the number of values
pooled per feature in the whole BN group) when that collection is mutable, so
Algorithm 2 can be computed exactly.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

EMA_STATS = 'ema_stats'
POPULATION_STATS = 'population_stats'
BATCH_MOMENTS = 'batch_moments'
STATS_MODES = ('batch', 'ema', 'population')
# The statistics an evaluation can normalize with.
EVAL_STATISTICS = ('ema', 'ema_debiased', 'population')
# Where the EMA starts (see BatchNorm.__call__).
EMA_INITIAL = {'mean': 0.0, 'var': 1.0}


def _keep_last(_, new):
  return new


class BatchNorm(nn.Module):
  """BN over the last axis (or over each activation, see `per_activation`).

  Attributes:
    momentum: EMA decay, ema = momentum * ema + (1 - momentum) * batch value
      (the TF/flax convention). The EMA variance is the biased batch variance.
    epsilon: added to the variance before the square root.
    axis_name: device axis whose devices share statistics (None: this
      device's batch only).
    axis_index_groups: restrict the sharing to groups of devices on axis_name.
    per_activation: normalize every activation (every position and channel)
      with its own statistics over the batch axis alone: the paper's
      "non-convolutional, per-activation" BN of its ensemble members.
    dtype: dtype of the output; statistics are always computed in float32.
  """
  momentum: float = 0.99
  epsilon: float = 1e-3
  axis_name: str | None = None
  axis_index_groups: Sequence[Sequence[int]] | None = None
  per_activation: bool = False
  dtype: Any = None

  @nn.compact
  def __call__(self, x, stats: str):
    if stats not in STATS_MODES:
      raise ValueError(f'BatchNorm stats={stats!r} is not one of {STATS_MODES}')
    feature_shape = x.shape[1:] if self.per_activation else x.shape[-1:]
    reduce_axes = tuple(range(x.ndim - len(feature_shape)))

    scale = self.param('scale', nn.initializers.ones, feature_shape, jnp.float32)
    bias = self.param('bias', nn.initializers.zeros, feature_shape, jnp.float32)
    ema_mean = self.variable(EMA_STATS, 'mean', jnp.zeros, feature_shape, jnp.float32)
    ema_var = self.variable(EMA_STATS, 'var', jnp.ones, feature_shape, jnp.float32)

    if stats == 'batch':
      mean, var = self._batch_moments(x, reduce_axes, feature_shape)
      if self.is_mutable_collection(EMA_STATS) and not self.is_initializing():
        ema_mean.value = self.momentum * ema_mean.value + (1 - self.momentum) * mean
        ema_var.value = self.momentum * ema_var.value + (1 - self.momentum) * var
    elif stats == 'ema':
      mean, var = ema_mean.value, ema_var.value
    else:
      if not self.has_variable(POPULATION_STATS, 'mean'):
        raise ValueError(
            f'BatchNorm {"/".join(self.path)}: no population statistics were '
            'given; compute them with scripts/population_stats.py')
      mean = self.get_variable(POPULATION_STATS, 'mean')
      var = self.get_variable(POPULATION_STATS, 'var')

    # y = gamma * (x - mean) / sqrt(var + eps) + beta, folded into one multiply-add.
    multiplier = scale * lax.rsqrt(var + self.epsilon)
    y = x.astype(jnp.float32) * multiplier + (bias - mean * multiplier)
    return y.astype(self.dtype or x.dtype)

  def _batch_moments(self, x, reduce_axes, feature_shape):
    x = x.astype(jnp.float32)
    mean = jnp.mean(x, reduce_axes)
    mean_of_squares = jnp.mean(jnp.square(x), reduce_axes)
    group_size = 1
    if self.axis_name is not None and not self.is_initializing():
      # One collective for both moments (stacked: one operand), exact because
      # every device of a group holds the same number of values.
      mean, mean_of_squares = lax.pmean(
          jnp.stack([mean, mean_of_squares]), self.axis_name,
          axis_index_groups=self.axis_index_groups)
      group_size = (len(self.axis_index_groups[0]) if self.axis_index_groups
                    else lax.axis_size(self.axis_name))
    var = jnp.maximum(mean_of_squares - jnp.square(mean), 0.0)
    count = math.prod(x.shape) // math.prod(feature_shape) * group_size
    self.sow(BATCH_MOMENTS, 'mean', mean, reduce_fn=_keep_last)
    self.sow(BATCH_MOMENTS, 'var', var, reduce_fn=_keep_last)
    self.sow(BATCH_MOMENTS, 'count', jnp.float32(count), reduce_fn=_keep_last)
    return mean, var


def layer_mode(statistics: str) -> str:
  """The BatchNorm mode that evaluates with `statistics` (one of EVAL_STATISTICS)."""
  return 'ema' if statistics == 'ema_debiased' else statistics


def debiased_ema(ema_stats, step, momentum: float):
  """EMA statistics after `step` updates, with the initial value's weight removed.

  After t updates ema_t = m^t * init + (1 - m) * sum_i m^(t-i) x_i, so
  (ema_t - m^t * init) / (1 - m^t) is the weighted mean of the batch values
  alone (Adam's bias correction, for an EMA that did not start at zero).
  """
  weight = momentum ** jnp.asarray(step, jnp.float32)
  weight = jnp.minimum(weight, 1 - 1e-7)   # step 0: nothing to debias, avoid 0 / 0

  def debias(path, value):
    initial = EMA_INITIAL[path[-1].key]
    return (value - weight * initial) / (1 - weight)

  return jax.tree_util.tree_map_with_path(debias, ema_stats)
