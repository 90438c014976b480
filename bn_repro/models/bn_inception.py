"""BN-Inception (paper Appendix), and the no-BN Inception it was compared with.

One code path builds every member of the family: with or without BN, ReLU or
sigmoid, the three stems, any width multiplier, the paper's or TF-slim's
module widths. The module table lives in `architecture.py`.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax.numpy as jnp

from bn_repro.models import architecture as arch
from bn_repro.models import initializers
from bn_repro.models.layers import (ConvUnit, UnitOptions, avg_pool,
                                    local_response_norm, max_pool)


def scale_channels(channels: int, width: float) -> int:
  return max(1, round(channels * width)) if channels else 0


def scale_spec(spec: arch.InceptionSpec, width: float) -> arch.InceptionSpec:
  fields = ('n1x1', 'n3x3_reduce', 'n3x3', 'dbl_reduce', 'dbl_3x3', 'pool_proj')
  return dataclasses.replace(
      spec, **{f: scale_channels(getattr(spec, f), width) for f in fields})


class InceptionModule(nn.Module):
  """Four parallel branches, concatenated on channels."""
  spec: arch.InceptionSpec
  opts: UnitOptions
  per_activation: bool = False

  @nn.compact
  def __call__(self, x, stats: str):
    s, o, pa = self.spec, self.opts, self.per_activation
    branches = []
    if s.n1x1:
      branches.append(ConvUnit(s.n1x1, 1, o, per_activation=pa, name='b1x1')(x, stats))

    b = ConvUnit(s.n3x3_reduce, 1, o, per_activation=pa, name='b3x3_reduce')(x, stats)
    branches.append(ConvUnit(s.n3x3, 3, o, strides=s.stride, per_activation=pa,
                             name='b3x3')(b, stats))

    b = ConvUnit(s.dbl_reduce, 1, o, per_activation=pa, name='dbl_reduce')(x, stats)
    b = ConvUnit(s.dbl_3x3, 3, o, per_activation=pa, name='dbl_3x3a')(b, stats)
    branches.append(ConvUnit(s.dbl_3x3, 3, o, strides=s.stride, per_activation=pa,
                             name='dbl_3x3b')(b, stats))

    pool = max_pool if s.pool == 'max' else avg_pool
    b = pool(x, s.stride)
    if s.pool_proj:
      b = ConvUnit(s.pool_proj, 1, o, per_activation=pa, name='pool_proj')(b, stats)
    branches.append(b)
    return jnp.concatenate(branches, axis=-1)


class Stem(nn.Module):
  """Everything before inception 3a (see architecture.STEMS)."""
  kind: str
  width: float
  lrn: bool
  opts: UnitOptions

  @nn.compact
  def __call__(self, x, stats: str):
    o = self.opts
    conv1 = scale_channels(arch.STEM_CONV1_CHANNELS, self.width)
    if self.kind == 'separable':
      # 7x7/2 depthwise with depth multiplier 8, then a 1x1 to conv1's width;
      # the BN and nonlinearity come after the pointwise conv.
      x = nn.Conv(x.shape[-1] * arch.STEM_DEPTH_MULTIPLIER, (7, 7), strides=(2, 2),
                  padding='SAME', feature_group_count=x.shape[-1], use_bias=False,
                  dtype=o.dtype, kernel_init=o.kernel_init(),
                  name='conv1_depthwise')(x)
      x = ConvUnit(conv1, 1, o, name='conv1')(x, stats)
    elif self.kind == 'plain':
      x = ConvUnit(conv1, 7, o, strides=2, name='conv1')(x, stats)
    else:
      x = ConvUnit(conv1, 3, o, name='conv1')(x, stats)

    if self.kind != 'small':
      x = max_pool(x, 2)
      if self.lrn:
        x = local_response_norm(x)
    x = ConvUnit(scale_channels(arch.STEM_CONV2_REDUCE, self.width), 1, o,
                 name='conv2_reduce')(x, stats)
    x = ConvUnit(scale_channels(arch.STEM_CONV2_CHANNELS, self.width), 3, o,
                 name='conv2')(x, stats)
    if self.lrn:
      x = local_response_norm(x)
    return max_pool(x, 2)


class BNInception(nn.Module):
  """The network. __call__(images, train, stats) -> float32 logits.

  train: dropout on. stats: which BN statistics to normalize with ('batch',
  'ema' or 'population'); defaults to 'batch' when training, 'ema' otherwise.
  """
  num_classes: int = 1000
  width: float = 1.0
  stem: str = 'separable'
  widths: str = 'paper'
  lrn: bool = False
  dropout_rate: float = 0.0
  per_activation_bn: bool = False
  opts: UnitOptions = UnitOptions()

  def module_specs(self):
    return tuple(scale_spec(s, self.width) for s in arch.MODULE_TABLES[self.widths])

  @nn.compact
  def __call__(self, x, train: bool = False, stats: str | None = None):
    stats = stats or ('batch' if train else 'ema')
    x = x.astype(self.opts.dtype)
    x = Stem(self.stem, self.width, self.lrn, self.opts, name='stem')(x, stats)
    specs = self.module_specs()
    for spec in specs:
      # The paper's per-activation BN goes in the last hidden layer: the
      # units of the last inception module.
      per_activation = self.per_activation_bn and spec is specs[-1]
      x = InceptionModule(spec, self.opts, per_activation,
                          name=f'inception_{spec.name}')(x, stats)
    x = jnp.mean(x.astype(jnp.float32), axis=(1, 2))  # global average pool
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    return nn.Dense(self.num_classes, kernel_init=initializers.lecun_normal(),
                    name='logits')(x)
