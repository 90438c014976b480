"""Exact evaluation over a whole split: summed counts, never a mean of batch means."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from bn_repro import device_map
from bn_repro.input_pipeline.pipeline import prefetch_to_devices


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


def evaluate(eval_step, variables, eval_data, *, prefetch: int = 2):
  """Runs `eval_step` (steps.make_eval_step) over every batch of `eval_data`.

  Returns EvalResult, or (EvalResult, probabilities [N, K], labels [N]) when
  the step returns probabilities; rows are in split order (whatever the
  process count) and padding is dropped.
  """
  totals, probs, labels, indices = None, [], [], []
  for batch in prefetch_to_devices(eval_data.batches(), prefetch):
    out = eval_step(variables, batch)
    counts = out
    if isinstance(out, tuple):
      counts, batch_probs = out
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
  if probs:
    order = np.argsort(np.concatenate(indices), kind='stable')
    return result, np.concatenate(probs)[order], np.concatenate(labels)[order]
  return result
