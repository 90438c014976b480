"""The whole training config checked once, up front: every mistake a one-line ConfigError.

The model section is checked where the model is built (models.build_model), the
BN grouping where it is decided (device_map.bn_groups); everything else here.
"""

from __future__ import annotations

from bn_repro.data import sources
from bn_repro.data.specs import IMAGENET_STORED_SIDES, dataset_spec
from bn_repro.errors import ConfigError, check_positive
from bn_repro.parallel import device_map
from bn_repro.loop import hooks
from bn_repro.training import durations, optim

TOP_LEVEL_FIELDS = {'name', 'seed', 'model', 'data', 'global_batch_size', 'eval_batch_size',
                    'train_for', 'log_every', 'check_finite_every', 'hooks', 'optimizer'}


def validate(config) -> None:
  unknown = sorted(set(config.keys()) - TOP_LEVEL_FIELDS)
  if unknown:
    raise ConfigError(f'{unknown[0]} is not a known config field; known: '
                      f'{", ".join(sorted(TOP_LEVEL_FIELDS))}')
  device_map.per_device_batch('global_batch_size', config.global_batch_size)
  device_map.per_device_batch('eval_batch_size', config.eval_batch_size)
  durations.parse('train_for', config.train_for)
  durations.parse('log_every', config.log_every)
  durations.parse('check_finite_every', config.check_finite_every, allow_zero=True)
  dataset_spec(config.data.dataset)
  sources.kind(config.data)
  check_positive('data.image_size', config.data.image_size)
  if config.data.stored_shorter_side not in (0,) + IMAGENET_STORED_SIDES:
    raise ConfigError(f'data.stored_shorter_side={config.data.stored_shorter_side} is not one '
                      f'of {IMAGENET_STORED_SIDES} (0: the original images)')
  if not 0 < config.data.eval_crop_fraction <= 1:
    raise ConfigError(f'data.eval_crop_fraction={config.data.eval_crop_fraction} must be in (0, 1]')
  if not 0 < config.data.min_area <= 1:
    raise ConfigError(f'data.min_area={config.data.min_area} must be in (0, 1]')
  check_positive('data.shuffle_buffer', config.data.shuffle_buffer)
  check_positive('data.prefetch', config.data.prefetch)
  optim.validate(config.optimizer)
  hooks.validate(config.hooks)
