"""The exact-evaluation step, beside the train step: per-example correctness masked
(padding) and summed over devices, so every example counts exactly once; multi-crop
batches average the class probabilities over crops.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from bn_repro.data.on_device import standardize
from bn_repro.data.specs import DatasetSpec
from bn_repro.parallel import device_map


def crop_averaged_probabilities(model, variables, images, spec: DatasetSpec, bn_mode: str):
  """Class probabilities [B, K]; images [B, H, W, C] or [B, crops, H, W, C]."""
  crops = images.shape[1] if images.ndim == 5 else 1
  flat = images.reshape((-1,) + images.shape[-3:])
  logits = model.apply(variables, standardize(flat, spec), train=False, stats=bn_mode)
  probs = jax.nn.softmax(logits.astype(jnp.float32))
  return probs.reshape((images.shape[0], crops, -1)).mean(axis=1)


def make_eval_step(model, spec: DatasetSpec, *, bn_mode: str):
  """(variables, batch) -> (counts summed over every device, per-example probabilities).

  counts: top1 / top5 correct, loss sum and number of real examples (exact
  integers for the counts). The probabilities stay on the devices unless the
  caller gathers them.
  """

  def step(variables, batch):
    probs = crop_averaged_probabilities(model, variables, batch['image'], spec, bn_mode)
    labels, mask = batch['label'], batch['mask']
    top5 = jax.lax.top_k(probs, min(5, probs.shape[-1]))[1]
    label_prob = jnp.take_along_axis(probs, labels[:, None], axis=-1)[:, 0]
    counts = device_map.psum({
        'top1_correct': jnp.sum((top5[:, 0] == labels) & mask, dtype=jnp.int32),
        'top5_correct': jnp.sum(jnp.any(top5 == labels[:, None], -1) & mask, dtype=jnp.int32),
        'count': jnp.sum(mask, dtype=jnp.int32),
        'loss_sum': jnp.sum(jnp.where(mask, -jnp.log(jnp.maximum(label_prob, 1e-30)), 0.0)),
    })
    return counts, probs

  return device_map.map_over_devices(step, in_axes=(None, 0), out_axes=(None, 0))
