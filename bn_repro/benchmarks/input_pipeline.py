"""Input-pipeline benchmark: the project's ImageNet pipeline against a bare tf.data
pipeline doing the same decode / crop / resize on the same JPEGs.

The JPEGs are made here (ImageNet-sized photos are not needed to time JPEG
decoding and resizing: smooth random images of ImageNet's typical 500x375 size
and quality-90 encoding), and fed to the project's pipeline through tfds's
mocking, so every line of it runs as on the real dataset.
"""

from __future__ import annotations

import statistics

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from bn_repro.benchmarks.timing import time_iterator
from bn_repro.data import pipeline, preprocessing

DISTINCT_IMAGES = 256
REPEAT = 16


def make_jpegs(count: int = DISTINCT_IMAGES, height: int = 375, width: int = 500,
               seed: int = 0) -> list[bytes]:
  rng = np.random.RandomState(seed)
  jpegs = []
  for _ in range(count):
    coarse = rng.randint(0, 256, (height // 25 + 1, width // 25 + 1, 3)).astype(np.float32)
    image = tf.image.resize(coarse[None], (height, width), method='bicubic')[0]
    image = image + rng.normal(0, 8, (height, width, 3))
    image = tf.cast(tf.clip_by_value(image, 0, 255), tf.uint8)
    jpegs.append(tf.io.encode_jpeg(image, quality=90).numpy())
  return jpegs


def _examples(jpegs):
  labels = np.arange(len(jpegs)) % 1000
  return tf.data.Dataset.from_tensor_slices({
      'image': tf.constant(jpegs), 'label': labels.astype(np.int64),
      'file_name': tf.constant([f'{i}.JPEG' for i in range(len(jpegs))])}).repeat(REPEAT)


def bare_train(jpegs, data_config, batch: int):
  c = data_config

  def prepare(jpeg):
    shape = tf.image.extract_jpeg_shape(jpeg)
    begin, size, _ = tf.image.sample_distorted_bounding_box(
        shape, tf.constant([0.0, 0.0, 1.0, 1.0], shape=[1, 1, 4]),
        min_object_covered=c.min_area, aspect_ratio_range=tuple(c.aspect_ratio),
        area_range=(c.min_area, 1.0), max_attempts=100, use_image_if_no_bounding_boxes=True)
    window = tf.stack([begin[0], begin[1], size[0], size[1]])
    image = tf.image.decode_and_crop_jpeg(jpeg, window, channels=3)
    image = tf.image.resize(image, [c.image_size, c.image_size], antialias=True)
    image = tf.image.random_flip_left_right(tf.cast(tf.round(image), tf.uint8))
    return image

  ds = tf.data.Dataset.from_tensor_slices(tf.constant(jpegs)).repeat()
  ds = ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE).batch(batch, drop_remainder=True)
  return iter(tfds.as_numpy(ds.prefetch(tf.data.AUTOTUNE)))


def bare_eval(jpegs, data_config, batch: int):
  c = data_config

  def prepare(jpeg):
    image = tf.image.decode_jpeg(jpeg, channels=3)
    image = preprocessing.resize_shorter_side(image, round(c.image_size / c.eval_crop_fraction))
    return preprocessing.center_crop(image, c.image_size)

  ds = tf.data.Dataset.from_tensor_slices(tf.constant(jpegs)).repeat()
  ds = ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE).batch(batch)
  return iter(tfds.as_numpy(ds.prefetch(tf.data.AUTOTUNE)))


def compare(config, *, batch: int = 128, num_batches: int = 20, repeats: int = 3) -> dict:
  """(3) images/s and CPU-ms per image: project vs bare tf.data, train and eval."""
  jpegs = make_jpegs()
  data = config.data.copy_and_resolve_references()
  data.dataset = 'imagenet2012'
  data.num_train_examples = data.num_eval_examples = DISTINCT_IMAGES * REPEAT
  data.in_memory = False
  data.cache_eval = False
  photometric = data.photometric_strength
  data.photometric_strength = 0.0   # the bare pipeline has none: compare like with like

  def as_dataset(self, split, decoders=None, read_config=None, shuffle_files=False):
    del self, split, decoders, read_config, shuffle_files
    return _examples(jpegs)

  results = {}
  with tfds.testing.mock_data(as_dataset_fn=as_dataset):
    source = pipeline.Source(data)
    train = lambda: pipeline.TrainData(source, global_batch=batch, seed=0).batches(0)
    evaluation = lambda: iter(pipeline.EvalData(source, global_batch=batch).dataset().as_numpy_iterator())
    data_photometric = data.copy_and_resolve_references()
    data_photometric.photometric_strength = photometric
    source_photometric = pipeline.Source(data_photometric)
    train_photometric = lambda: pipeline.TrainData(
        source_photometric, global_batch=batch, seed=0).batches(0)
    makers = {
        'project_train': train,
        'bare_train': lambda: bare_train(jpegs, data, batch),
        'project_eval': evaluation,
        'bare_eval': lambda: bare_eval(jpegs, data, batch),
        f'project_train_photometric_{photometric:g}': train_photometric,
    }
    runs = {name: [] for name in makers}
    for _ in range(repeats):
      for name, make in makers.items():
        runs[name].append(time_iterator(make, num_batches, batch))
  for name, values in runs.items():
    rates = [v[0] for v in values]
    results[name] = {'images_per_s': statistics.median(rates), 'min': min(rates),
                     'max': max(rates),
                     'cpu_ms_per_image': statistics.median([v[1] for v in values])}
  results['train_ratio_project_over_bare'] = (
      results['project_train']['images_per_s'] / results['bare_train']['images_per_s'])
  results['eval_ratio_project_over_bare'] = (
      results['project_eval']['images_per_s'] / results['bare_eval']['images_per_s'])
  return results
