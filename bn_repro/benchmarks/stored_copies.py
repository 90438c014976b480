"""(8) Which pre-resized copy to store: its size, its host cost per training image, and
how much of the photograph its training crops keep.

A copy is (shorter side, JPEG quality), made as scripts/prepare_data.py makes it: the
original JPEG decoded, its shorter side resized down (data/resized.py), re-encoded. The
originals are the benchmark's photo-like JPEGs (input_pipeline.photo_like), encoded at
quality 90 from uncompressed photographs that are kept as the reference. Per copy:

- the mean JPEG size;
- CPU-ms per training image of the host's work with the augmentation on the device
  (preprocessing.train_image: decode the crop window, resize to 224), the same crop seeds
  for every copy, measured as part 3 measures it (process CPU time over images);
- fidelity: the PSNR of its crops against the uncompressed photograph's, each crop the
  same box relative to the image, both sampled at the output's scale after an
  anti-aliased resize, so it counts what the copy lost (pixels and JPEG noise), not the
  pipeline's own resize; also for the small crops alone (< 30% of the area), which are
  the ones a smaller copy upscales.
"""

from __future__ import annotations

import statistics

import numpy as np
import tensorflow as tf

from bn_repro.benchmarks.input_pipeline import photo_like
from bn_repro.benchmarks.timing import time_iterator
from bn_repro.data import preprocessing, resized
from bn_repro.errors import ConfigError

ORIGINAL_QUALITY = 90   # about ImageNet's own
SMALL_CROP_AREA = 0.3
CROPS_PER_IMAGE = 4


def parse_copies(specs: list[str]) -> list[tuple[int, int]]:
  """['320:90', '256:90'] -> [(320, 90), (256, 90)], with a clear error for anything else."""
  copies = []
  for spec in specs:
    side, sep, quality = spec.partition(':')
    if not (sep and side.isdigit() and quality.isdigit() and 0 < int(quality) <= 100
            and int(side) > 0):
      raise ConfigError(f'stored copy {spec!r}: expected SIDE:QUALITY, e.g. 320:90 '
                       '(a positive side, quality 1-100)')
    copies.append((int(side), int(quality)))
  return copies


def make_copy(original_jpegs: list[bytes], side: int, quality: int) -> list[bytes]:
  return [tf.io.encode_jpeg(resized.resize_shorter_side_down(tf.image.decode_jpeg(j), side),
                            quality=quality).numpy() for j in original_jpegs]


def crop_boxes(count: int, images: int, image_hw, min_area: float, aspect_ratio,
               seed: int = 0):
  """(image index, [y0, x0, y1, x1] relative to the image, area) of `count` crops of the
  training pipeline's range on images of `image_hw` (area uniform from min_area to 1, pixel
  aspect log-uniform, clipped to the image), for the fidelity; the timed map draws its own
  crops with the pipeline's sampler."""
  rng = np.random.default_rng(seed)
  height, width = image_hw
  boxes = []
  for k in range(count):
    area = rng.uniform(min_area, 1.0)
    aspect = np.exp(rng.uniform(*np.log(aspect_ratio)))   # width / height, in pixels
    h = min(1.0, np.sqrt(area * width / (aspect * height)))
    w = min(1.0, np.sqrt(area * aspect * height / width))
    y, x = rng.uniform(0, 1 - h), rng.uniform(0, 1 - w)
    boxes.append((k % images, [y, x, y + h, x + w], h * w))
  return boxes


def crops_at_output_scale(images, boxes, size: int) -> list[np.ndarray]:
  """Each box of its image as a size x size float crop: the whole image resized
  (anti-aliased) so that the box spans `size` pixels, then sampled point for point."""
  out = []
  for index, box, _ in boxes:
    image = tf.cast(images[index], tf.float32)
    hw = np.array(image.shape[:2], float)
    extent = (np.array(box[2:]) - np.array(box[:2])) * hw
    scaled = tf.image.resize(image, np.maximum(1, np.round(hw * size / extent)).astype(int),
                             method='bilinear', antialias=True)
    out.append(tf.image.crop_and_resize(scaled[None], [box], [0], [size, size])[0].numpy())
  return out


def psnr(squared_errors) -> float:
  """PSNR of the mean of per-crop mean squared errors."""
  mse = float(np.mean(squared_errors))
  return float(10 * np.log10(255.0 ** 2 / max(mse, 1e-10)))   # identical: 148 dB, not inf


def host_train_cost(jpegs: list[bytes], data_config, batch: int, num_batches: int):
  """(images/s, CPU-ms per image) of the training map with the augmentation on the device."""
  c = data_config

  def prepare(jpeg, seed):
    return preprocessing.train_image(
        jpeg, seed, image_size=c.image_size, channels=3, min_area=c.min_area,
        aspect_ratio=tuple(c.aspect_ratio), flip=False, photometric_strength=0.0)

  def make():
    seeds = tf.data.Dataset.random(seed=0).batch(2)   # the same crops for every copy
    ds = tf.data.Dataset.zip(tf.data.Dataset.from_tensor_slices(tf.constant(jpegs)).repeat(),
                             seeds)
    ds = ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE).batch(batch, drop_remainder=True)
    return iter(ds.prefetch(tf.data.AUTOTUNE).as_numpy_iterator())

  return time_iterator(make, num_batches, batch)


def compare(data_config, copies: list[tuple[int, int]], *, images: int = 96, batch: int = 128,
            num_batches: int = 20, repeats: int = 3) -> dict:
  """{'original' and 'side{S}_q{Q}': size, cost and fidelity} (see the module docstring)."""
  rng = np.random.default_rng(0)
  photographs = [photo_like(rng) for _ in range(images)]
  originals = [tf.io.encode_jpeg(p, quality=ORIGINAL_QUALITY).numpy() for p in photographs]
  variants = {'original': originals}
  for side, quality in copies:
    variants[f'side{side}_q{quality}'] = make_copy(originals, side, quality)

  boxes = crop_boxes(CROPS_PER_IMAGE * images, images, photographs[0].shape[:2],
                     data_config.min_area, tuple(data_config.aspect_ratio))
  small = np.array([area < SMALL_CROP_AREA for *_, area in boxes])
  size = data_config.image_size
  reference = crops_at_output_scale(photographs, boxes, size)

  costs = {name: [] for name in variants}
  for _ in range(repeats):   # interleaved, so a slow moment hits every copy alike
    for name, jpegs in variants.items():
      costs[name].append(host_train_cost(jpegs, data_config, batch, num_batches))
  results = {}
  for name, jpegs in variants.items():
    decoded = [tf.image.decode_jpeg(j, channels=3) for j in jpegs]
    errors = np.array([np.mean((c - r) ** 2) for c, r in
                       zip(crops_at_output_scale(decoded, boxes, size), reference)])
    cpu_ms = statistics.median(c[1] for c in costs[name])
    results[name] = {
        'jpeg_kb': float(np.mean([len(j) for j in jpegs]) / 1000),
        'cpu_ms_per_image': cpu_ms, 'cpu_ms_by_repeat': [round(c[1], 3) for c in costs[name]],
        'images_per_s_per_core': 1000 / cpu_ms,
        'fidelity_db': psnr(errors),
        'fidelity_db_small_crops': psnr(errors[small]) if small.any() else None}
  return results
