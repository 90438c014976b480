"""The paper's Figure 1 network: 3 fully connected hidden layers of 100 sigmoid units."""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from bn_repro.models import initializers
from bn_repro.models.layers import UnitOptions, normalize_and_activate


def kernel_init(init_std: float | None):
  """The paper: "small random Gaussian values"; None keeps flax's LeCun init."""
  if init_std:
    return initializers.normal(init_std)
  return initializers.lecun_normal()


class DenseUnit(nn.Module):
  """Dense, then BN (bias dropped) or a bias, then g."""
  features: int
  opts: UnitOptions
  init_std: float | None = None

  @nn.compact
  def __call__(self, x, stats: str):
    x = nn.Dense(self.features, use_bias=not self.opts.batch_norm,
                 dtype=self.opts.dtype, kernel_init=kernel_init(self.init_std),
                 name='dense')(x)
    return normalize_and_activate(self, x, stats, self.opts)


class FigureOneMLP(nn.Module):
  """__call__(images, train, stats) -> float32 logits, as BNInception."""
  num_classes: int = 10
  hidden_sizes: Sequence[int] = (100, 100, 100)
  init_std: float | None = None
  opts: UnitOptions = UnitOptions(activation='sigmoid')

  @nn.compact
  def __call__(self, x, train: bool = False, stats: str | None = None):
    stats = stats or ('batch' if train else 'ema')  # no dropout in this network
    x = x.reshape((x.shape[0], -1)).astype(self.opts.dtype)
    for i, size in enumerate(self.hidden_sizes):
      x = DenseUnit(size, self.opts, self.init_std, name=f'hidden{i + 1}')(x, stats)
    logits = nn.Dense(self.num_classes, kernel_init=kernel_init(self.init_std),
                      name='logits')(x)
    return logits.astype(jnp.float32)
