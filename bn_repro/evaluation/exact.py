"""Exact evaluation over a whole split: summed counts, never a mean of batch means.

The eval step (training.eval_step) masks padding and sums over devices, so every
example counts exactly once; here its counts are summed over the batches of a split.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

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


def evaluate(eval_step, variables, eval_data, *, keep_probs: bool = False,
             prefetch: int = 2) -> Evaluation:
  """Runs `eval_step` (training.eval_step.make_eval_step) over every batch of `eval_data` (its `batches()`
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
