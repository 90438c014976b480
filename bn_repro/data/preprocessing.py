"""Image preprocessing in TensorFlow, deterministic given a per-example seed.

Train (Inception style): a random crop covering
[min_area, 1] of the image with aspect ratio in `aspect_ratio`, resized to
image_size, then (here, or on the device: data/on_device.py) a random
horizontal flip and photometric distortions (brightness, saturation, hue,
contrast) scaled by `photometric_strength`.
Eval: resize the shorter side to image_size / crop_fraction, center crop.

All randomness is stateless and seeded per example, so a run's data is a
pure function of (seed, epoch, position) whatever the parallelism, which
makes resuming from a checkpoint exact. Outputs are uint8; the model
standardizes on the device.
"""

from __future__ import annotations

import tensorflow as tf

from bn_repro.data.on_device import (BRIGHTNESS_DELTA, CONTRAST_RANGE, HUE_DELTA,
                                     SATURATION_RANGE)


def _image_shape(image):
  """(height, width, channels) of a decoded image or of JPEG bytes."""
  if image.dtype == tf.string:
    return tf.image.extract_jpeg_shape(image)
  return tf.shape(image)


def decode(image, channels, crop_window=None):
  """Decoded uint8 image, optionally only the crop window [y, x, h, w]."""
  if image.dtype == tf.string:
    if crop_window is not None:
      return tf.image.decode_and_crop_jpeg(image, crop_window, channels=channels)
    return tf.image.decode_jpeg(image, channels=channels)
  if crop_window is not None:
    return tf.slice(image, [crop_window[0], crop_window[1], 0],
                    [crop_window[2], crop_window[3], -1])
  return image


# A side shrunk by this factor or more is anti-aliased; below it plain bilinear
# interpolation still weighs every source pixel, at a third of the cost of area
# averaging (docs/performance.md; tests/test_host_input.py bounds the difference).
ANTIALIAS_FROM_SHRINK = 2


def resize(image, size):
  """uint8 image resized to `size` = [h, w]: bilinear unless a side shrinks by
  ANTIALIAS_FROM_SHRINK or more; then area averaging if both sides shrink (as good as an
  anti-aliased bilinear resize there, at half its cost), else anti-aliased bilinear."""
  shape = tf.shape(image)[:2]
  size = tf.convert_to_tensor(size, tf.int32)
  needs_antialias = tf.reduce_any(shape >= ANTIALIAS_FROM_SHRINK * size)
  shrinks = tf.reduce_all(shape >= size)
  resized = tf.case(
      [(tf.logical_not(needs_antialias),
        lambda: tf.image.resize(image, size, method='bilinear')),
       (shrinks, lambda: tf.image.resize(image, size, method='area'))],
      default=lambda: tf.image.resize(image, size, method='bilinear', antialias=True))
  # All three are weighted means of the uint8 pixels, so within [0, 255]: round half up.
  return tf.cast(resized + 0.5, tf.uint8)


def random_crop_window(shape, seed, min_area, aspect_ratio):
  """[y, x, h, w] of a random crop, as tf.image.sample_distorted_bounding_box picks it."""
  whole_image = tf.constant([0.0, 0.0, 1.0, 1.0], shape=[1, 1, 4])
  begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
      shape, whole_image, seed=seed, min_object_covered=min_area,
      aspect_ratio_range=aspect_ratio, area_range=(min_area, 1.0),
      max_attempts=100, use_image_if_no_bounding_boxes=True)
  return tf.stack([begin[0], begin[1], size[0], size[1]])


def photometric(image, seed, strength):
  """Brightness, saturation, hue and contrast jitter on a uint8 image."""
  seeds = tf.random.experimental.stateless_split(seed, 4)
  x = tf.image.convert_image_dtype(image, tf.float32)
  x = tf.image.stateless_random_brightness(x, BRIGHTNESS_DELTA * strength, seeds[0])
  if image.shape[-1] == 3:
    x = tf.image.stateless_random_saturation(
        x, 1 - SATURATION_RANGE * strength, 1 + SATURATION_RANGE * strength, seeds[1])
    x = tf.image.stateless_random_hue(x, min(HUE_DELTA * strength, 0.5), seeds[2])
  x = tf.image.stateless_random_contrast(
      x, 1 - CONTRAST_RANGE * strength, 1 + CONTRAST_RANGE * strength, seeds[3])
  return tf.image.convert_image_dtype(tf.clip_by_value(x, 0.0, 1.0), tf.uint8,
                                      saturate=True)


def train_image(image, seed, *, image_size, channels, min_area, aspect_ratio,
                flip, photometric_strength):
  """Inception-style augmentation of one image (JPEG bytes or uint8 HxWxC)."""
  crop_seed, flip_seed, color_seed = tf.unstack(
      tf.random.experimental.stateless_split(seed, 3))
  if min_area < 1.0:
    window = random_crop_window(_image_shape(image), crop_seed, min_area, aspect_ratio)
    image = decode(image, channels, window)
  else:
    image = decode(image, channels)
  image = resize(image, [image_size, image_size])
  image.set_shape([image_size, image_size, channels])
  if flip:
    image = tf.image.stateless_random_flip_left_right(image, flip_seed)
  if photometric_strength > 0:
    image = photometric(image, color_seed, photometric_strength)
  return image


def resize_shorter_side(image, size):
  shape = tf.shape(image)
  h, w = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
  scale = tf.cast(size, tf.float32) / tf.minimum(h, w)
  new_h = tf.cast(tf.round(h * scale), tf.int32)
  new_w = tf.cast(tf.round(w * scale), tf.int32)
  return resize(image, [tf.maximum(new_h, size), tf.maximum(new_w, size)])


def center_crop(image, size):
  shape = tf.shape(image)
  top = (shape[0] - size) // 2
  left = (shape[1] - size) // 2
  return tf.slice(image, [top, left, 0], [size, size, -1])


def eval_image(image, *, image_size, channels, crop_fraction):
  """Single-crop eval: shorter side to image_size / crop_fraction, center crop."""
  image = decode(image, channels)
  resized = round(image_size / crop_fraction)
  image = center_crop(resize_shorter_side(image, resized), image_size)
  image.set_shape([image_size, image_size, channels])
  return image
