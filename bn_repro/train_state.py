"""The training state: everything a checkpoint holds to continue a run exactly."""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct

from bn_repro.batchnorm import EMA_STATS
from bn_repro.models import init_variables


class TrainState(struct.PyTreeNode):
  step: jax.Array        # int32 scalar: optimizer steps taken
  params: Any
  ema_stats: Any         # BN moving averages (collection EMA_STATS); {} without BN
  opt_state: Any
  rng: jax.Array         # uint32 key data (plain array, so it checkpoints as is)

  def variables(self, population_stats=None) -> dict:
    """Variables for model.apply; population statistics only when given."""
    variables = {'params': self.params, EMA_STATS: self.ema_stats}
    if population_stats is not None:
      variables['population_stats'] = population_stats
    return variables


def create_train_state(model, tx: optax.GradientTransformation, image_shape,
                       seed: int, sharding=None) -> TrainState:
  """A fresh state, the same on every process, placed with `sharding` (e.g. replicated).

  One compiled program builds all of it: eager per-leaf initialization would
  compile a small program for every distinct parameter shape.
  """

  @functools.partial(jax.jit, out_shardings=sharding)
  def create():
    init_key, run_key = jax.random.split(jax.random.key(seed))
    variables = init_variables(model, image_shape, init_key)
    return TrainState(step=jnp.zeros((), jnp.int32), params=variables['params'],
                      ema_stats=variables[EMA_STATS], opt_state=tx.init(variables['params']),
                      rng=jax.random.key_data(run_key))

  return create()
