"""The per-device train step, mapped over all devices.

Gradients and metrics are averaged over the device axis; BN batch statistics
are synced inside the model, over the devices of each BN group. A step whose
loss, gradients or new state are not finite leaves the state untouched and
reports `finite = False`, so the last good state survives to be checkpointed.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from bn_repro.data.on_device import Augmentation, train_images
from bn_repro.data.specs import DatasetSpec
from bn_repro.models.batchnorm import EMA_STATS
from bn_repro.parallel import device_map
from bn_repro.training.state import TrainState


def _all_finite(tree):
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def make_train_step(model, tx: optax.GradientTransformation, schedule, spec: DatasetSpec,
                    augmentation: Augmentation | None = None, seed: int = 0):
  """(state, batch) -> (state, metrics), compiled once, state replicated.

  augmentation: the flip and photometric distortions to do here, from each example's
  batch['aug_seed'] and the run's `seed` (None: the host did them).

  When BN groups are smaller than all devices, the EMA statistics differ per
  device after a step; they are averaged over devices so that the replicated
  state stays identical everywhere.
  """
  average_ema = not model.opts.bn_groups.spans_all_devices

  def step(state: TrainState, batch):
    rng = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
    rng = jax.random.fold_in(rng, device_map.device_index())
    images = train_images(batch, spec, augmentation, seed)
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
    # A step counts as failed if its loss, its gradients or the state it produces is not
    # finite (a finite gradient times a huge learning rate can still overflow).
    finite = jnp.isfinite(metrics['loss']) & _all_finite((grads, new_state.params,
                                                           new_state.opt_state))
    new_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old), new_state, state)
    metrics['finite'] = finite
    metrics['learning_rate'] = schedule(state.step)
    return new_state, metrics

  return device_map.map_over_devices(step, in_axes=(None, 0), out_axes=(None, None),
                                     donate_argnums=(0,))
