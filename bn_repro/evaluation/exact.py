"""Exact evaluation over a whole split: summed counts, never a mean of batch means.

Per-example correctness is masked (padding) and summed over devices, so every
example counts exactly once; multi-crop batches average the class
probabilities over crops.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from bn_repro.data.on_device import standardize
from bn_repro.data.specs import DatasetSpec
from bn_repro.parallel import device_map


@dataclasses.dataclass(frozen=True)
class EvalResult:
  count: int
  top1_correct: int
  top5_correct: int
  loss_sum: float

  @property
  def top1(self) -> float:
    return self.top1_correct / self.count

  @property
  def top5(self) -> float:
    return self.top5_correct / self.count

  @property
  def loss(self) -> float:
    return self.loss_sum / self.count

  def metrics(self, prefix: str = 'eval_') -> dict:
    return {f'{prefix}top1': self.top1, f'{prefix}top5': self.top5,
            f'{prefix}top1_error': 1 - self.top1, f'{prefix}top5_error': 1 - self.top5,
            f'{prefix}loss': self.loss, f'{prefix}examples': self.count}


@dataclasses.dataclass(frozen=True)
class Evaluation:
  """An evaluation's counts and, when kept, its per-example class probabilities in split
  order (padding dropped): probs [N, K], labels [N]."""
  result: EvalResult
  probs: np.ndarray | None = None
  labels: np.ndarray | None = None


def crop_averaged_probabilities(model, variables, images, spec: DatasetSpec, stats: str):
  """Class probabilities [B, K]; images [B, H, W, C] or [B, crops, H, W, C]."""
  crops = images.shape[1] if images.ndim == 5 else 1
  flat = images.reshape((-1,) + images.shape[-3:])
  logits = model.apply(variables, standardize(flat, spec), train=False, stats=stats)
  probs = jax.nn.softmax(logits.astype(jnp.float32))
  return probs.reshape((images.shape[0], crops, -1)).mean(axis=1)


def make_eval_step(model, spec: DatasetSpec, *, stats: str):
  """(variables, batch) -> (counts summed over every device, per-example probabilities).

  counts: top1 / top5 correct, loss sum and number of real examples (exact
  integers for the counts). The probabilities stay on the devices unless the
  caller gathers them.
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
    return counts, probs

  return device_map.map_over_devices(step, in_axes=(None, 0), out_axes=(None, 0))


def evaluate(eval_step, variables, eval_data, *, keep_probs: bool = False,
             prefetch: int = 2) -> Evaluation:
  """Runs `eval_step` (make_eval_step) over every batch of `eval_data` (its `batches()`
  padded with mask False, and `num_examples`)."""
  totals, probs, labels, indices = None, [], [], []
  for batch in device_map.prefetch(eval_data.batches(), prefetch):
    counts, batch_probs = eval_step(variables, batch)
    if keep_probs:
      keep = device_map.gather_to_host(batch['mask'])
      probs.append(device_map.gather_to_host(batch_probs)[keep])
      labels.append(device_map.gather_to_host(batch['label'])[keep])
      indices.append(device_map.gather_to_host(batch['index'])[keep])
    totals = counts if totals is None else jax.tree.map(lambda a, b: a + b, totals, counts)
  totals = device_map.to_host(totals)
  result = EvalResult(int(totals['count']), int(totals['top1_correct']),
                      int(totals['top5_correct']), float(totals['loss_sum']))
  if result.count != eval_data.num_examples:
    raise RuntimeError(f'evaluation counted {result.count} examples, the split has '
                       f'{eval_data.num_examples}')
  if not keep_probs:
    return Evaluation(result)
  order = np.argsort(np.concatenate(indices), kind='stable')
  return Evaluation(result, np.concatenate(probs)[order], np.concatenate(labels)[order])
