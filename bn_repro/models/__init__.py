"""The model family, built from a config's `model` section."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import ml_collections

from bn_repro.errors import (ConfigError, check_choice, check_positive,
                             check_range)
from bn_repro.models import architecture
from bn_repro.models.batchnorm import EMA_STATS
from bn_repro.models.bn_inception import BNInception
from bn_repro.models.layers import ACTIVATIONS, UnitOptions
from bn_repro.models.mlp import FigureOneMLP
from bn_repro.parallel.device_map import NO_DEVICE_AXIS, BNGroups

MODEL_NAMES = ('bn_inception', 'mlp')
DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}
COMMON_FIELDS = {'name', 'num_classes', 'batch_norm', 'activation', 'dtype', 'bn'}
INCEPTION_FIELDS = COMMON_FIELDS | {
    'width', 'stem', 'widths', 'lrn', 'dropout_rate', 'per_activation_bn',
    'kernel_init_scale'}
MLP_FIELDS = COMMON_FIELDS | {'hidden_sizes', 'init_std'}
BN_FIELDS = {'momentum', 'epsilon', 'group_size'}


def _check_fields(section: str, config, allowed) -> None:
  unknown = sorted(set(config.keys()) - set(allowed))
  if unknown:
    raise ConfigError(f'{section}.{unknown[0]} is not a known option; known: '
                      f'{", ".join(sorted(allowed))}')


def unit_options(config: ml_collections.ConfigDict, bn_groups: BNGroups) -> UnitOptions:
  """Normalization/activation options of every weight layer."""
  check_choice('model.activation', config.activation, tuple(ACTIVATIONS))
  check_choice('model.dtype', config.dtype, tuple(DTYPES))
  bn = config.bn
  _check_fields('model.bn', bn, BN_FIELDS)
  check_positive('model.bn.epsilon', bn.epsilon)
  check_range('model.bn.momentum', bn.momentum, 0.0, 1.0)
  return UnitOptions(
      batch_norm=bool(config.batch_norm), activation=config.activation,
      bn_momentum=bn.momentum, bn_epsilon=bn.epsilon, bn_groups=bn_groups,
      dtype=DTYPES[config.dtype],
      kernel_init_scale=config.get('kernel_init_scale', 1.0))


def build_model(config: ml_collections.ConfigDict, *, image_size: int,
                bn_groups: BNGroups = NO_DEVICE_AXIS):
  """The flax module for `config` (the config's `model` section).

  image_size: side of the (square) input images, checked against the stem.
  bn_groups: which devices share BN batch statistics (device_map.bn_groups of
    `config.bn.group_size`) when the model runs inside the device map; the
    default runs it on one device's batch alone, outside any device map.
  """
  check_choice('model.name', config.name, MODEL_NAMES)
  check_positive('model.num_classes', config.num_classes)
  if config.name == 'mlp':
    _check_fields('model', config, MLP_FIELDS)
    if any(size <= 0 for size in config.hidden_sizes):
      raise ConfigError(f'model.hidden_sizes={tuple(config.hidden_sizes)} must all be > 0')
    return FigureOneMLP(num_classes=config.num_classes,
                        hidden_sizes=tuple(config.hidden_sizes),
                        init_std=config.init_std,
                        opts=unit_options(config, bn_groups))

  _check_fields('model', config, INCEPTION_FIELDS)
  check_positive('model.width', config.width)
  check_positive('model.kernel_init_scale', config.kernel_init_scale)
  check_choice('model.stem', config.stem, architecture.STEMS)
  check_choice('model.widths', config.widths, tuple(architecture.MODULE_TABLES))
  check_range('model.dropout_rate', config.dropout_rate, 0.0, 1.0)
  min_size = architecture.TOTAL_STRIDE[config.stem]
  if image_size < min_size:
    hint = " (use model.stem='small' for 28x28 or 32x32 images)" if config.stem != 'small' else ''
    raise ConfigError(
        f'image size {image_size} is too small for model.stem={config.stem!r}: '
        f'it needs at least {min_size}x{min_size}, the network\'s total stride{hint}')
  return BNInception(
      num_classes=config.num_classes, width=config.width, stem=config.stem,
      widths=config.widths, lrn=bool(config.lrn),
      dropout_rate=config.dropout_rate,
      per_activation_bn=bool(config.per_activation_bn),
      opts=unit_options(config, bn_groups))


@functools.cache
def _compiled_init(model, image_shape):
  return jax.jit(lambda k: _init(model, image_shape, k))


def _init(model, image_shape, key):
  dummy = jnp.zeros((1,) + tuple(image_shape), jnp.float32)
  return model.init(key, dummy, mutable=('params', EMA_STATS))


def init_variables(model, image_shape, key) -> dict:
  """{'params', 'ema_stats'} for one image of `image_shape` (H, W, C).

  Compiled once per (model, shape) when called eagerly; inlined when traced.
  """
  if isinstance(key, jax.core.Tracer):
    variables = _init(model, image_shape, key)
  else:
    variables = _compiled_init(model, tuple(image_shape))(key)
  return {'params': variables['params'], EMA_STATS: variables.get(EMA_STATS, {})}


def abstract_variables(model, image_shape) -> dict:
  """Shapes and dtypes of init_variables, without computing anything."""
  dummy = jax.ShapeDtypeStruct((1,) + tuple(image_shape), jnp.float32)
  variables = jax.eval_shape(
      lambda x: model.init(jax.random.key(0), x, mutable=('params', EMA_STATS)), dummy)
  return {'params': variables['params'], EMA_STATS: variables.get(EMA_STATS, {})}
