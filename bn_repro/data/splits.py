"""How a split is shared among processes and cut into batches (no TensorFlow here).

Every input source (tfds records, synthetic batches) describes this process's
part of a split with a SplitPart, and derives from it the numbers every
process must agree on: steps per epoch and eval batches.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from bn_repro.parallel import device_map


@dataclasses.dataclass(frozen=True)
class SplitPart:
  """This process's part of a split, and the sizes every process agrees on."""
  read_instruction: Any      # what the source reads (for tfds: builder.as_dataset's `split`)
  start: int                 # position of this part's first example in the split
  num_examples: int          # in this process's part
  min_num_examples: int      # in the smallest part over all processes
  max_num_examples: int      # in the largest part over all processes
  total_examples: int        # in the whole split


def even_sizes(total: int, count: int) -> list[int]:
  """Contiguous parts of `total` examples over `count` processes, as tfds splits them."""
  return [total // count + (i < total % count) for i in range(count)]


def part_from_sizes(read_instruction, sizes: list[int], total: int) -> SplitPart:
  """This process's SplitPart, given every process's part size (in process order)."""
  index = device_map.process_index()
  return SplitPart(read_instruction, sum(sizes[:index]), sizes[index], min(sizes),
                   max(sizes), total)


def steps_per_epoch(train_part: SplitPart, global_batch: int) -> int:
  """Full global batches per epoch (every process runs the same number)."""
  local_batch = device_map.per_process_batch(global_batch)
  return max(1, train_part.min_num_examples // local_batch)


def eval_steps(eval_part: SplitPart, global_batch: int) -> int:
  """Batches that cover the largest process's part (smaller parts pad)."""
  local_batch = device_map.per_process_batch(global_batch)
  return math.ceil(eval_part.max_num_examples / local_batch)


def pad_batch(batch: dict, size: int) -> dict:
  """Pads every array to `size` rows with zeros; adds mask (True for real rows)."""
  n = len(batch['label'])
  padded = {k: np.concatenate([v, np.zeros((size - n,) + v.shape[1:], v.dtype)])
            for k, v in batch.items()}
  padded['mask'] = np.arange(size) < n
  return padded
