"""(3) The input pipeline's cost per image on the host, the figure that sizes a GPU node's CPUs.

The project's ImageNet pipeline runs, through tfds's mocking, on JPEGs made
here to look like ImageNet's: 500x375 photographs' statistics (a 1/f^1.1
amplitude spectrum, correlated colour channels; about 110 KB at quality 90),
not white noise, which JPEG encodes and decodes very differently. Measured:
the original images and the pre-resized copy (data/resized.py), augmentation
on the host (tf.data) or on the device (the host only decodes, crops and
resizes), train and eval, each as images/s and CPU-ms per image; and a bare
tf.data pipeline doing the same train and eval work, as the floor to compare with.
"""

from __future__ import annotations

import contextlib
import statistics

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from bn_repro.benchmarks.timing import time_iterator
from bn_repro.data import pipeline, preprocessing, resized

DISTINCT_IMAGES = 256
REPEAT = 16
SPECTRUM_SLOPE = 1.1   # amplitude ~ 1/f^1.1: natural photographs' range, ~110 KB at quality 90


def photo_like(rng: np.random.Generator, height: int = 375, width: int = 500) -> np.ndarray:
  """A uint8 RGB image with a photograph's spatial and colour statistics."""
  fy = np.fft.fftfreq(height)[:, None]
  fx = np.fft.rfftfreq(width)[None, :]
  frequency = np.sqrt(fx ** 2 + fy ** 2)
  frequency[0, 0] = 1.0 / max(height, width)
  amplitude = frequency ** -SPECTRUM_SLOPE

  def field():
    spectrum = amplitude * (rng.standard_normal(amplitude.shape)
                            + 1j * rng.standard_normal(amplitude.shape))
    x = np.fft.irfft2(spectrum, s=(height, width))
    return (x - x.mean()) / x.std()

  luminance, chroma_a, chroma_b = field(), 0.35 * field(), 0.35 * field()
  rgb = np.stack([luminance + chroma_a, luminance - 0.5 * chroma_a + chroma_b,
                  luminance - chroma_b], axis=-1)
  image = 128 + rng.uniform(35, 60) * rgb + rng.uniform(-30, 30)
  return np.clip(image, 0, 255).astype(np.uint8)


def make_jpegs(count: int = DISTINCT_IMAGES, seed: int = 0, side: int = 0) -> list[bytes]:
  """`count` photo-like JPEGs (quality 90), with shorter sides resized to `side` if given,
  as scripts/prepare_data.py --shorter_side stores them."""
  rng = np.random.default_rng(seed)
  jpegs = []
  for _ in range(count):
    image = tf.constant(photo_like(rng))
    if side:
      image = resized.resize_shorter_side_down(image, side)
    jpegs.append(tf.io.encode_jpeg(image, quality=resized.QUALITY).numpy())
  return jpegs


def _examples(jpegs):
  labels = np.arange(len(jpegs)) % 1000
  return tf.data.Dataset.from_tensor_slices({
      'image': tf.constant(jpegs), 'label': labels.astype(np.int64),
      'file_name': tf.constant([f'{i}.JPEG' for i in range(len(jpegs))])}).repeat(REPEAT)


def bare_train(jpegs, data_config, batch: int):
  """tf.data alone: decode the crop window, resize, flip (no photometric distortions)."""
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
    return tf.image.random_flip_left_right(tf.cast(tf.round(image), tf.uint8))

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


def imagenet_config(data_config, num_examples: int):
  """data_config reading imagenet2012 records of num_examples (as mocked_imagenet serves)."""
  data = data_config.copy_and_resolve_references()
  data.dataset = 'imagenet2012'
  data.source = 'tfds'
  data.num_train_examples = data.num_eval_examples = num_examples
  data.in_memory = False
  data.cache_eval = False
  return data


@contextlib.contextmanager
def mocked_imagenet(originals: list[bytes], smaller: list[bytes]):
  """tfds's imagenet2012 (and its shorter-side copy) serving these JPEGs, REPEAT times over."""

  def as_dataset(self, split, decoders=None, read_config=None, shuffle_files=False):
    del split, decoders, read_config, shuffle_files
    return _examples(smaller if isinstance(self, resized.Imagenet2012Shorter) else originals)

  with tfds.testing.mock_data(as_dataset_fn=as_dataset):
    yield


def compare(config, *, batch: int = 128, num_batches: int = 20, repeats: int = 3,
            side: int = 320) -> dict:
  """images/s and CPU-ms per image of each pipeline variant (see the module docstring)."""
  originals, smaller = make_jpegs(), make_jpegs(side=side)
  data = imagenet_config(config.data, DISTINCT_IMAGES * REPEAT)

  def variant(stored_side: int, on_device: bool):
    c = data.copy_and_resolve_references()
    c.stored_shorter_side, c.augment_on_device = stored_side, on_device
    return pipeline.Source(c)

  runs, sizes = {}, {'original_kb': np.mean([len(j) for j in originals]) / 1000,
                     f'side{side}_kb': np.mean([len(j) for j in smaller]) / 1000}
  with mocked_imagenet(originals, smaller):
    makers = {}
    for stored, label in ((0, 'original'), (side, f'side{side}')):
      for on_device in (False, True):
        source = variant(stored, on_device)
        where = 'device' if on_device else 'host'
        makers[f'train_{label}_{where}_augmentation'] = (
            lambda s=source: pipeline.TrainData(s, global_batch=batch, seed=0).batches(0))
      source = variant(stored, False)
      makers[f'eval_{label}'] = (
          lambda s=source: iter(pipeline.EvalData(s, global_batch=batch).dataset()
                                .as_numpy_iterator()))
    plain = data.copy_and_resolve_references()
    plain.photometric_strength = 0.0
    makers['bare_tf_data_train_original'] = lambda: bare_train(originals, plain, batch)
    makers['bare_tf_data_eval_original'] = lambda: bare_eval(originals, plain, batch)
    for name in makers:
      runs[name] = []
    for _ in range(repeats):
      for name, make in makers.items():
        runs[name].append(time_iterator(make, num_batches, batch))
  results = {'jpeg_sizes': sizes, 'photometric_strength': data.photometric_strength}
  for name, values in runs.items():
    rates = [v[0] for v in values]
    cpu_ms = statistics.median([v[1] for v in values])
    results[name] = {'images_per_s': statistics.median(rates), 'min': min(rates),
                     'max': max(rates), 'cpu_ms_per_image': cpu_ms,
                     'images_per_s_per_core': 1000 / cpu_ms}
  return results
