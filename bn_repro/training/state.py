"""The training state: everything a checkpoint holds to continue a run exactly."""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct

from bn_repro.models import init_variables
from bn_repro.models.batchnorm import EMA_STATS, POPULATION_STATS, debiased_ema


class TrainState(struct.PyTreeNode):
  step: jax.Array        # int32 scalar: optimizer steps taken
  params: Any
  ema_stats: Any         # BN moving averages (collection EMA_STATS); {} without BN
  opt_state: Any
  rng: jax.Array         # uint32 key data (plain array, so it checkpoints as is)

  def model_part(self) -> dict:
    """What inference needs: {'params', EMA_STATS} (a checkpoint's 'model' item)."""
    return {'params': self.params, EMA_STATS: self.ema_stats}

  def training_part(self) -> dict:
    """What only training needs (a checkpoint's 'training' item)."""
    return {'step': self.step, 'opt_state': self.opt_state, 'rng': self.rng}

  @classmethod
  def from_parts(cls, model_part: dict, training_part: dict) -> 'TrainState':
    return cls(params=model_part['params'], ema_stats=model_part[EMA_STATS], **training_part)

  def variables(self, population_stats=None) -> dict:
    return model_variables(self.model_part(), population_stats)


def model_variables(model_part: dict, population_stats=None) -> dict:
  """Variables for model.apply; population statistics only when given."""
  variables = dict(model_part)
  if population_stats is not None:
    variables[POPULATION_STATS] = population_stats
  return variables


_debiased = jax.jit(debiased_ema, static_argnums=2)


def eval_variables(model_part: dict, statistics: str, *, step, momentum: float,
                   population_stats=None) -> dict:
  """Variables for evaluating with `statistics` (models.batchnorm.EVAL_STATISTICS) after
  `step` training steps; population_stats is needed for 'population' only."""
  if statistics == 'ema_debiased':
    model_part = dict(model_part, **{EMA_STATS: _debiased(model_part[EMA_STATS], step, momentum)})
  return model_variables(model_part, population_stats if statistics == 'population' else None)


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
