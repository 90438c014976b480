"""SGD with momentum, L2 weight regularization and GoogLeNet's staircase LR decay."""

from __future__ import annotations

import optax
from flax import traverse_util

from bn_repro.errors import ConfigError, check_positive, check_range
from bn_repro.training import durations


def validate(opt_config) -> None:
  check_positive('optimizer.learning_rate', opt_config.learning_rate)
  check_positive('optimizer.lr_scale', opt_config.lr_scale)
  check_positive('optimizer.reference_batch', opt_config.reference_batch)
  check_range('optimizer.momentum', opt_config.momentum, 0.0, 1.0)
  if opt_config.weight_decay < 0:
    raise ConfigError(f'optimizer.weight_decay={opt_config.weight_decay} must be >= 0')
  if not 0 < opt_config.lr_decay_factor <= 1:
    raise ConfigError(f'optimizer.lr_decay_factor={opt_config.lr_decay_factor} must be in (0, 1]')
  check_positive('optimizer.lr_decay_speedup', opt_config.lr_decay_speedup)
  durations.parse('optimizer.lr_decay_every', opt_config.lr_decay_every)
  durations.parse('optimizer.warmup', opt_config.warmup, allow_zero=True)


def peak_learning_rate(opt_config, global_batch: int) -> float:
  """learning_rate x lr_scale, times global_batch / reference_batch when the rate follows
  the batch (linear scaling: the paper's rates are for its replicas' batches of 32)."""
  rate = opt_config.learning_rate * opt_config.lr_scale
  if opt_config.scale_with_batch:
    rate *= global_batch / opt_config.reference_batch
  return rate


def decay_interval_steps(opt_config, steps_per_epoch: int) -> float:
  """Steps between two LR decays, after the paper's "accelerate the decay" speed-up."""
  every = durations.parse('optimizer.lr_decay_every', opt_config.lr_decay_every)
  steps = every.amount * (steps_per_epoch if every.unit == 'epochs' else 1)
  return steps / opt_config.lr_decay_speedup


def learning_rate_schedule(opt_config, steps_per_epoch: int, global_batch: int) -> optax.Schedule:
  """lr(step) = lr0 * factor ** floor(step / interval), after an optional linear warmup."""
  peak = peak_learning_rate(opt_config, global_batch)
  interval = max(1, round(decay_interval_steps(opt_config, steps_per_epoch)))
  decay = optax.exponential_decay(peak, transition_steps=interval,
                                  decay_rate=opt_config.lr_decay_factor, staircase=True)
  warmup = durations.parse('optimizer.warmup', opt_config.warmup,
                           allow_zero=True).steps(steps_per_epoch)
  if not warmup:
    return decay
  return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), decay], [warmup])


def weight_decay_mask(params, decay_bn_params: bool):
  """True for the leaves L2 applies to: weights (kernels), and BN gamma/beta if asked."""

  def decayed(path):
    if path[-1] == 'kernel':
      return True
    return decay_bn_params and len(path) > 1 and path[-2] == 'bn'

  flat = traverse_util.flatten_dict(params)
  return traverse_util.unflatten_dict({k: decayed(k) for k in flat})


def make_optimizer(opt_config, schedule: optax.Schedule) -> optax.GradientTransformation:
  # L2 regularization lambda/2 * |w|^2 adds lambda * w to the gradient, before momentum.
  return optax.chain(
      optax.add_decayed_weights(
          opt_config.weight_decay,
          mask=lambda params: weight_decay_mask(params, opt_config.decay_bn_params)),
      optax.sgd(schedule, momentum=opt_config.momentum or None,
                nesterov=opt_config.nesterov))
