"""Building blocks shared by the model family."""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
from jax import lax

from bn_repro.models import initializers
from bn_repro.models.batchnorm import BatchNorm
from bn_repro.parallel.device_map import NO_DEVICE_AXIS, BNGroups

# Pre-activations (the input of each nonlinearity) are sown here, for the
# internal-covariate-shift probe. Nothing is stored unless a caller asks.
PREACTIVATIONS = 'preactivations'

ACTIVATIONS = {'relu': nn.relu, 'sigmoid': nn.sigmoid}


def _keep_last(_, new):
  return new


@dataclasses.dataclass(frozen=True)
class UnitOptions:
  """How every weight layer of a network is normalized and activated."""
  batch_norm: bool = True
  activation: str = 'relu'
  bn_momentum: float = 0.99
  bn_epsilon: float = 1e-3
  bn_groups: BNGroups = NO_DEVICE_AXIS   # which devices share BN batch statistics
  dtype: Any = jnp.float32
  kernel_init_scale: float = 1.0

  def kernel_init(self):
    # He initialization (fan-in, truncated normal), optionally scaled up: the
    # paper's ensemble uses "larger initial weights" for some members.
    return initializers.he_normal(self.kernel_init_scale)

  def batch_norm_layer(self, per_activation=False, name='bn') -> BatchNorm:
    return BatchNorm(momentum=self.bn_momentum, epsilon=self.bn_epsilon,
                     axis_name=self.bn_groups.axis_name,
                     axis_index_groups=self.bn_groups.axis_index_groups,
                     per_activation=per_activation, dtype=self.dtype, name=name)


def normalize_and_activate(module: nn.Module, x, stats: str, opts: UnitOptions,
                           per_activation: bool = False):
  """z = g(BN(Wu)) with BN, z = g(Wu + b) without: the part after the weights.

  Called from a weight unit's compact __call__, so the BN layer and the sown
  pre-activation belong to that unit.
  """
  if opts.batch_norm:
    x = opts.batch_norm_layer(per_activation)(x, stats)
  module.sow(PREACTIVATIONS, 'x', x, reduce_fn=_keep_last)
  return ACTIVATIONS[opts.activation](x)


class ConvUnit(nn.Module):
  """SAME-padded conv, then BN (the conv bias dropped) or a bias, then g."""
  features: int
  kernel: int
  opts: UnitOptions
  strides: int = 1
  per_activation: bool = False

  @nn.compact
  def __call__(self, x, stats: str):
    x = nn.Conv(self.features, (self.kernel, self.kernel),
                strides=(self.strides, self.strides), padding='SAME',
                use_bias=not self.opts.batch_norm, dtype=self.opts.dtype,
                kernel_init=self.opts.kernel_init(), name='conv')(x)
    return normalize_and_activate(self, x, stats, self.opts, self.per_activation)


def local_response_norm(x, size=5, alpha=1e-4, beta=0.75, k=1.0):
  """Cross-channel LRN as in GoogLeNet/Caffe: x / (k + alpha/size * sum x^2)^beta."""
  squares = jnp.square(x.astype(jnp.float32))
  half = size // 2
  window_sum = lax.reduce_window(
      squares, 0.0, lax.add, (1,) * (x.ndim - 1) + (size,), (1,) * x.ndim,
      ((0, 0),) * (x.ndim - 1) + ((half, size - 1 - half),))
  return (x / jnp.power(k + alpha / size * window_sum, beta)).astype(x.dtype)


def max_pool(x, stride):
  return nn.max_pool(x, (3, 3), (stride, stride), padding='SAME')


def avg_pool(x, stride):
  return nn.avg_pool(x, (3, 3), (stride, stride), padding='SAME',
                     count_include_pad=False)
