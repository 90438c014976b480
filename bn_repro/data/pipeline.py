"""tf.data pipelines: resumable training batches and exact, padded eval batches.

Training data is a pure function of (config.seed, epoch, position in epoch):
each epoch reads this process's part of the split with a seeded file order
and a seeded shuffle buffer, numbers the examples, and seeds each example's
augmentation with its number. Resuming at step s therefore only skips the
first (s mod steps_per_epoch) * batch raw records of the epoch, undecoded.

Eval data: every example of the split exactly once, in batches padded to the
full per-host batch with mask = False, and the same number of batches on
every process.
"""

from __future__ import annotations

import functools
from typing import Callable, Iterator

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from bn_repro.parallel import device_map
from bn_repro.errors import DataError
from bn_repro.data import datasets, preprocessing, splits
from bn_repro.data.specs import dataset_spec

# Examples per process part must stay below this for per-example seeds to be unique.
_POSITIONS_PER_EPOCH = 1 << 24


def _derived_seed(*parts: int) -> int:
  return int(np.random.SeedSequence(list(parts)).generate_state(1)[0] & 0x7FFFFFFF)


def _decoders(data_config):
  # ImageNet JPEGs stay encoded so that the train crop decodes only its window.
  if data_config.dataset == 'imagenet2012':
    return {'image': tfds.decode.SkipDecoding()}
  return None


class Source:
  """A dataset's builder plus the config values every pipeline needs."""

  def __init__(self, data_config):
    self.config = data_config
    self.spec = dataset_spec(data_config.dataset)
    self.builder = datasets.get_builder(data_config)

    self._in_memory = {}

  def train_data(self, *, global_batch: int, seed: int) -> 'TrainData':
    return TrainData(self, global_batch=global_batch, seed=seed)

  def eval_data(self, *, global_batch: int, preprocess: Callable | None = None,
                split: str | None = None) -> 'EvalData':
    return EvalData(self, global_batch=global_batch, preprocess=preprocess, split=split)

  def read(self, split_part: splits.SplitPart, *, shuffle_seed: int | None):
    """This process's examples of a split; files in a seeded order when shuffle_seed is set."""
    if self.config.get('in_memory', False):
      # Small datasets: decode once, keep the arrays (the order is the file order).
      key = str(split_part.read_instruction)
      if key not in self._in_memory:
        self._in_memory[key] = tfds.as_numpy(self.builder.as_dataset(
            split=split_part.read_instruction, batch_size=-1, decoders=_decoders(self.config)))
      arrays = self._in_memory[key]
      return tf.data.Dataset.from_tensor_slices({k: arrays[k] for k in ('image', 'label')})
    read_config = tfds.ReadConfig(shuffle_seed=shuffle_seed, try_autocache=False)
    return self.builder.as_dataset(
        split=split_part.read_instruction, shuffle_files=shuffle_seed is not None,
        decoders=_decoders(self.config), read_config=read_config)


class TrainData:
  """Training batches of this process: {'image': uint8 [B, H, W, C], 'label': int32 [B]}."""

  def __init__(self, source: Source, *, global_batch: int, seed: int):
    self.source = source
    self.seed = seed
    self.local_batch = device_map.per_process_batch(global_batch)
    c = source.config
    self.part = datasets.split_part(source.builder, c.train_split, c.num_train_examples)
    if self.part.min_num_examples < self.local_batch:
      raise DataError(
          f'split {c.train_split!r} has {self.part.min_num_examples} examples per process, '
          f'fewer than the per-process batch of {self.local_batch}')
    if self.part.max_num_examples >= _POSITIONS_PER_EPOCH:
      raise DataError(f'split {c.train_split!r} is too large for per-example seeds')
    self.steps_per_epoch = splits.steps_per_epoch(self.part, global_batch)
    self.augment_on_device = bool(c.augment_on_device)
    # With augment_on_device the host only crops and resizes; the flip and the
    # photometric distortions happen in the train step, from each example's aug_seed.
    self._augment = functools.partial(
        preprocessing.train_image, image_size=c.image_size, channels=source.spec.channels,
        min_area=c.min_area, aspect_ratio=tuple(c.aspect_ratio),
        flip=c.flip and not self.augment_on_device,
        photometric_strength=0.0 if self.augment_on_device else c.photometric_strength)

  def epoch_dataset(self, epoch: int, skip_batches: int = 0) -> tf.data.Dataset:
    """The batches of one epoch, starting after `skip_batches` of them."""
    process = device_map.process_index()
    shuffle_seed = _derived_seed(self.seed, epoch, process)
    ds = self.source.read(self.part, shuffle_seed=shuffle_seed)
    ds = ds.shuffle(self.source.config.shuffle_buffer, seed=shuffle_seed,
                    reshuffle_each_iteration=False)
    ds = ds.enumerate().skip(skip_batches * self.local_batch)
    stream = epoch * device_map.process_count() + process
    example_seed_base = stream * _POSITIONS_PER_EPOCH

    def prepare(position, example):
      seed = tf.stack([tf.constant(self.seed, tf.int64), example_seed_base + position])
      prepared = {'image': self._augment(example['image'], seed),
                  'label': tf.cast(example['label'], tf.int32)}
      if self.augment_on_device:
        prepared['aug_seed'] = tf.cast(tf.stack([tf.constant(stream, tf.int64), position]),
                                       tf.uint32)
      return prepared

    ds = ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.batch(self.local_batch, drop_remainder=True)
    ds = ds.take(self.steps_per_epoch - skip_batches)
    return ds.prefetch(tf.data.AUTOTUNE)

  def batches(self, start_step: int = 0) -> Iterator[dict]:
    """Host numpy batches for steps start_step, start_step + 1, ... (forever)."""
    epoch, skip = divmod(start_step, self.steps_per_epoch)
    while True:
      yield from tfds.as_numpy(self.epoch_dataset(epoch, skip))
      epoch, skip = epoch + 1, 0


class EvalData:
  """Every example of the eval split once: {'image', 'label', 'index', 'mask'} batches.

  index: the example's position in the split (the same on any process count).
  """

  def __init__(self, source: Source, *, global_batch: int,
               preprocess: Callable | None = None, split: str | None = None):
    self.source = source
    c = source.config
    self.split = split or c.eval_split
    self.local_batch = device_map.per_process_batch(global_batch)
    self.part = datasets.split_part(source.builder, self.split, c.num_eval_examples)
    self.num_steps = splits.eval_steps(self.part, global_batch)
    self.preprocess = preprocess or functools.partial(
        preprocessing.eval_image, image_size=c.image_size, channels=source.spec.channels,
        crop_fraction=c.eval_crop_fraction)
    self._cache = None

  @property
  def num_examples(self) -> int:
    """Examples in the whole split (all processes)."""
    return self.part.total_examples

  def dataset(self) -> tf.data.Dataset:
    ds = self.source.read(self.part, shuffle_seed=None).enumerate()
    ds = ds.map(lambda i, ex: {'image': self.preprocess(ex['image']),
                               'label': tf.cast(ex['label'], tf.int32),
                               'index': tf.cast(i + self.part.start, tf.int32)},
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.batch(self.local_batch)
    if self.source.config.get('cache_eval', False):
      ds = ds.cache()
    return ds.prefetch(tf.data.AUTOTUNE)

  def batches(self) -> Iterator[dict]:
    """Exactly num_steps full-size host batches; padding has mask False."""
    if self._cache is None:
      self._cache = self.dataset()
    steps = 0
    template = None
    for batch in tfds.as_numpy(self._cache):
      template = batch
      yield splits.pad_batch(batch, self.local_batch)
      steps += 1
    if steps > self.num_steps:
      raise DataError(f'eval split {self.split!r} yielded more batches than its size says')
    if template is None:
      raise DataError(f'eval split {self.split!r} is empty on process {device_map.process_index()}')
    for _ in range(self.num_steps - steps):
      yield splits.pad_batch({k: v[:0] for k, v in template.items()}, self.local_batch)
