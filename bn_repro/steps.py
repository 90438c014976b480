"""The per-device train and eval steps, mapped over all devices.

Train: gradients and metrics are averaged over the device axis; BN batch
statistics are synced inside the model (as `model.bn.group_size` says). A
step whose loss or gradients are not finite leaves the state untouched and
reports `finite = False`, so the last good state survives to be checkpointed.

Eval: per-example correctness is masked (padding) and summed over devices,
so every example counts exactly once; multi-crop batches average the class
probabilities over crops.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from bn_repro import device_map
from bn_repro.batchnorm import EMA_STATS
from bn_repro.input_pipeline.specs import DatasetSpec
from bn_repro.train_state import TrainState


def standardize(images, spec: DatasetSpec, dtype=jnp.float32):
  """uint8 images -> (x / 255 - mean) / std, per channel."""
  mean = jnp.asarray(spec.mean, jnp.float32) * 255
  std = jnp.asarray(spec.std, jnp.float32) * 255
  return ((images.astype(jnp.float32) - mean) / std).astype(dtype)


def _all_finite(tree):
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def make_train_step(model, tx: optax.GradientTransformation, schedule,
                    spec: DatasetSpec, *, average_ema: bool):
  """(state, batch) -> (state, metrics), compiled once, state replicated.

  average_ema: average the EMA over devices each step; needed when BN
  statistics are not synced over all devices (per device or in groups), so
  that the replicated state stays identical everywhere.
  """

  def step(state: TrainState, batch):
    rng = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
    rng = jax.random.fold_in(rng, device_map.device_index())
    images = standardize(batch['image'], spec)
    labels = batch['label']

    def loss_fn(params):
      logits, updates = model.apply(
          {'params': params, EMA_STATS: state.ema_stats}, images, train=True,
          mutable=[EMA_STATS], rngs={'dropout': rng})
      loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
      return loss, (logits, updates.get(EMA_STATS, {}))

    (loss, (logits, ema_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    grads = device_map.pmean(grads)
    if average_ema:
      ema_stats = device_map.pmean(ema_stats)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    new_state = state.replace(step=state.step + 1,
                              params=optax.apply_updates(state.params, updates),
                              ema_stats=ema_stats, opt_state=opt_state)
    metrics = device_map.pmean({
        'loss': loss,
        'top1': jnp.mean(jnp.argmax(logits, -1) == labels),
    })
    finite = jnp.isfinite(metrics['loss']) & _all_finite(grads)
    new_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old), new_state, state)
    metrics['finite'] = finite
    metrics['learning_rate'] = schedule(state.step)
    return new_state, metrics

  return device_map.map_over_devices(step, in_axes=(None, 0), out_axes=(None, None),
                                     donate_argnums=(0,))


def crop_averaged_probabilities(model, variables, images, spec: DatasetSpec, stats: str):
  """Class probabilities [B, K]; images [B, H, W, C] or [B, crops, H, W, C]."""
  crops = images.shape[1] if images.ndim == 5 else 1
  flat = images.reshape((-1,) + images.shape[-3:])
  logits = model.apply(variables, standardize(flat, spec), train=False, stats=stats)
  probs = jax.nn.softmax(logits.astype(jnp.float32))
  return probs.reshape((images.shape[0], crops, -1)).mean(axis=1)


def make_eval_step(model, spec: DatasetSpec, *, stats: str, return_probs: bool = False):
  """(variables, batch) -> summed counts (and per-example probabilities).

  counts: top1 / top5 correct, loss sum and number of real examples, summed
  over every device (exact integers for the counts).
  """

  def step(variables, batch):
    probs = crop_averaged_probabilities(model, variables, batch['image'], spec, stats)
    labels, mask = batch['label'], batch['mask']
    top5 = jax.lax.top_k(probs, min(5, probs.shape[-1]))[1]
    label_prob = jnp.take_along_axis(probs, labels[:, None], axis=-1)[:, 0]
    counts = device_map.psum({
        'top1_correct': jnp.sum((top5[:, 0] == labels) & mask, dtype=jnp.int32),
        'top5_correct': jnp.sum(jnp.any(top5 == labels[:, None], -1) & mask, dtype=jnp.int32),
        'count': jnp.sum(mask, dtype=jnp.int32),
        'loss_sum': jnp.sum(jnp.where(mask, -jnp.log(jnp.maximum(label_prob, 1e-30)), 0.0)),
    })
    if return_probs:
      return counts, probs
    return counts

  out_axes = (None, 0) if return_probs else None
  return device_map.map_over_devices(step, in_axes=(None, 0), out_axes=out_axes)
