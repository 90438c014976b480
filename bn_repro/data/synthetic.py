"""Synthetic input: noise images and labels of the configured dataset's shapes, from numpy.

`config.data.source = 'synthetic'` feeds train_and_evaluate these batches instead of
the tfds records, so the whole loop (prefetch, hooks, metrics, checkpoints) runs
and can be timed on a machine without TensorFlow, such as an accelerator image.
The batches keep the real pipeline's contract: the same keys and dtypes (uint8
images, int32 labels, the per-example augmentation seeds when the train step
augments), the per-process batch, steps per epoch, and exact, padded eval
batches. Each batch is a pure function of (seed, process, step), so a resumed
run sees what an uninterrupted one saw. A run learns nothing from noise. Split
sizes come from data.num_train_examples / num_eval_examples (default: the
dataset's), not from the split names.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

from bn_repro.data import splits
from bn_repro.data.specs import dataset_spec, image_shape
from bn_repro.errors import DataError
from bn_repro.parallel import device_map

# Split sizes used when the config gives none (ImageNet's and the MNISTs').
DEFAULT_SIZES = {'imagenet2012': (1_281_167, 50_000), 'fashion_mnist': (60_000, 10_000),
                 'mnist': (60_000, 10_000)}
# Each batch is a window into one pool of batch + POOL_EXTRA images (a view, no copy):
# consecutive batches differ, and making noise costs the host nothing per step.
POOL_EXTRA = 7


class _Pool:
  """uint8 images and int32 labels from which each batch is a contiguous window."""

  def __init__(self, config, batch: int, seed: int, stream: int):
    spec = dataset_spec(config.dataset)
    rng = np.random.default_rng([seed, stream, device_map.process_index()])
    size = batch + POOL_EXTRA
    self.batch = batch
    self.images = rng.integers(0, 256, (size,) + image_shape(config), dtype=np.uint8)
    self.labels = rng.integers(0, spec.num_classes, size, dtype=np.int32)

  def window(self, step: int) -> tuple[np.ndarray, np.ndarray]:
    offset = step % (POOL_EXTRA + 1)
    return (self.images[offset:offset + self.batch],
            self.labels[offset:offset + self.batch])


def _part(total: int | None, default: int) -> splits.SplitPart:
  total = total or default
  return splits.part_from_sizes(None, splits.even_sizes(total, device_map.process_count()),
                                total)


class SyntheticSource:
  """The synthetic counterpart of pipeline.Source."""

  def __init__(self, data_config):
    self.config = data_config
    self.spec = dataset_spec(data_config.dataset)

  def train_data(self, *, global_batch: int, seed: int) -> 'SyntheticTrainData':
    return SyntheticTrainData(self, global_batch=global_batch, seed=seed)

  def eval_data(self, *, global_batch: int, preprocess=None,
                split: str | None = None) -> 'SyntheticEvalData':
    if preprocess is not None:
      raise DataError('the synthetic source has no multi-crop evaluation')
    return SyntheticEvalData(self, global_batch=global_batch, split=split)


class SyntheticTrainData:
  """Training batches: {'image', 'label'} (+ 'aug_seed' with augment_on_device)."""

  def __init__(self, source: SyntheticSource, *, global_batch: int, seed: int):
    c = source.config
    self.source = source
    self.local_batch = device_map.per_process_batch(global_batch)
    self.part = _part(c.num_train_examples, DEFAULT_SIZES[c.dataset][0])
    if self.part.min_num_examples < self.local_batch:
      raise DataError(f'data.num_train_examples={self.part.total_examples} gives fewer '
                      f'examples per process than the per-process batch of {self.local_batch}')
    self.steps_per_epoch = splits.steps_per_epoch(self.part, global_batch)
    # The host-side flip and photometric distortions (augment_on_device=False) are not
    # imitated: noise stays noise.
    self.augment_on_device = bool(c.augment_on_device)
    self._pool = _Pool(c, self.local_batch, seed, stream=0)

  def batch(self, step: int) -> dict:
    images, labels = self._pool.window(step)
    batch = {'image': images, 'label': labels}
    if self.augment_on_device:
      # The seeds the real pipeline gives: (stream, position in the epoch).
      epoch, index = divmod(step, self.steps_per_epoch)
      stream = epoch * device_map.process_count() + device_map.process_index()
      positions = index * self.local_batch + np.arange(self.local_batch)
      batch['aug_seed'] = np.stack([np.full(self.local_batch, stream), positions],
                                   axis=1).astype(np.uint32)
    return batch

  def batches(self, start_step: int = 0) -> Iterator[dict]:
    step = start_step
    while True:
      yield self.batch(step)
      step += 1


class SyntheticEvalData:
  """Every example of a synthetic eval split once, padded like pipeline.EvalData."""

  def __init__(self, source: SyntheticSource, *, global_batch: int, split: str | None = None):
    c = source.config
    self.split = split or c.eval_split
    self.local_batch = device_map.per_process_batch(global_batch)
    self.part = _part(c.num_eval_examples, DEFAULT_SIZES[c.dataset][1])
    self.num_steps = splits.eval_steps(self.part, global_batch)
    self._pool = _Pool(c, self.local_batch, seed=0, stream=1)

  @property
  def num_examples(self) -> int:
    return self.part.total_examples

  def batches(self) -> Iterator[dict]:
    for i in range(self.num_steps):
      first = i * self.local_batch
      n = max(0, min(self.local_batch, self.part.num_examples - first))
      images, labels = self._pool.window(i)
      batch = {'image': images[:n], 'label': labels[:n],
               'index': (self.part.start + first + np.arange(n)).astype(np.int32)}
      yield splits.pad_batch(batch, self.local_batch)
