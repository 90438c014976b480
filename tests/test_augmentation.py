"""Augmentation on the device: each operation as TensorFlow's, the random draws distributed
as TensorFlow's, and the same result on any number of devices."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf

from bn_repro.data import on_device
from bn_repro.data.specs import dataset_spec
from bn_repro.parallel import device_map

RNG = np.random.default_rng(0)
IMAGE = RNG.uniform(0, 1, (6, 7, 3)).astype(np.float32)


def _saturation(image, factor):
  return on_device.adjust_saturation_and_hue(image, factor=factor)


def _hue(image, delta):
  return on_device.adjust_saturation_and_hue(image, delta=delta)


@pytest.mark.parametrize('name,ours,theirs,value', [
    ('brightness', on_device.adjust_brightness, tf.image.adjust_brightness, 0.1),
    ('contrast', on_device.adjust_contrast, tf.image.adjust_contrast, 1.4),
    ('saturation', _saturation, tf.image.adjust_saturation, 0.6),
    ('saturation up', _saturation, tf.image.adjust_saturation, 1.5),
    ('hue', _hue, tf.image.adjust_hue, 0.15),
    ('hue back', _hue, tf.image.adjust_hue, -0.2),
    ('saturation then hue', lambda x, v: on_device.adjust_saturation_and_hue(x, v, v - 1.0),
     lambda x, v: tf.image.adjust_hue(tf.image.adjust_saturation(x, v), v - 1.0), 1.3),
])
def test_each_operation_equals_tensorflows(name, ours, theirs, value):
  expected = theirs(tf.constant(IMAGE), value).numpy()
  np.testing.assert_allclose(ours(jnp.asarray(IMAGE), value), expected, atol=2e-6, err_msg=name)


def test_hsv_conversions_equal_tensorflows_and_invert_each_other():
  image = np.concatenate([IMAGE.reshape(-1, 3), np.eye(3), np.zeros((1, 3)), np.ones((1, 3)),
                          [[0.5, 0.5, 0.5]]]).astype(np.float32)
  hsv = on_device.rgb_to_hsv(jnp.asarray(image))
  np.testing.assert_allclose(hsv, tf.image.rgb_to_hsv(image).numpy(), atol=2e-6)
  np.testing.assert_allclose(on_device.hsv_to_rgb(hsv), image, atol=2e-6)


def _tf_statistic(op, image, seeds):
  return np.array([op(tf.constant(image), tf.constant([7, s], tf.int64)) for s in seeds])


STRENGTH = 0.8


def _device_draws(n, channels=3):
  augmentation = on_device.Augmentation(flip=True, photometric_strength=STRENGTH)
  keys = jax.random.split(jax.random.key(3), n)
  return jax.vmap(lambda k: augmentation.draws(k, channels))(keys)


def test_random_draws_are_distributed_as_tensorflows():
  """Over 2,000 draws each, every random parameter has TensorFlow's range and mean: read off
  TensorFlow's stateless ops applied to images that reveal them, and from our draws."""
  n = 2000
  ours = _device_draws(n)
  s = STRENGTH
  gray = np.full((2, 2, 3), 0.5, np.float32)
  theirs = {
      'brightness': _tf_statistic(lambda x, seed: tf.image.stateless_random_brightness(
          x, on_device.BRIGHTNESS_DELTA * s, seed)[0, 0, 0] - 0.5, gray, range(n)),
      'contrast': _tf_statistic(lambda x, seed: tf.image.stateless_random_contrast(
          x, 1 - on_device.CONTRAST_RANGE * s, 1 + on_device.CONTRAST_RANGE * s, seed)[0, 0, 0],
          np.array([[[0.75] * 3, [0.25] * 3]], np.float32), range(n)),
  }
  # A pixel at 0.75 of an image whose mean is 0.5 goes to 0.5 + 0.25 * factor.
  theirs['contrast'] = (theirs['contrast'] - 0.5) / 0.25
  red = np.array([[[0.8, 0.4, 0.4]]], np.float32)     # hue 0, saturation 0.5
  theirs['saturation'] = _tf_statistic(lambda x, seed: tf.image.rgb_to_hsv(
      tf.image.stateless_random_saturation(x, 1 - on_device.SATURATION_RANGE * s,
                                           1 + on_device.SATURATION_RANGE * s, seed))[0, 0, 1]
      / 0.5, red, range(n))
  theirs['hue'] = _tf_statistic(lambda x, seed: tf.image.rgb_to_hsv(
      tf.image.stateless_random_hue(x, on_device.HUE_DELTA * s, seed))[0, 0, 0], red, range(n))
  theirs['hue'] = (theirs['hue'] + 0.5) % 1.0 - 0.5   # the shift, in (-0.5, 0.5]
  theirs['flip'] = _tf_statistic(lambda x, seed: tf.cast(
      tf.image.stateless_random_flip_left_right(x, seed)[0, 0, 0] > 0.5, tf.float32),
      np.array([[[0.0], [1.0]]], np.float32), range(n))
  limits = {'brightness': on_device.BRIGHTNESS_DELTA * s, 'contrast': on_device.CONTRAST_RANGE * s,
            'saturation': on_device.SATURATION_RANGE * s, 'hue': on_device.HUE_DELTA * s}
  for name, theirs_values in theirs.items():
    values = np.asarray(ours[name], np.float64)
    center = 1.0 if name in ('contrast', 'saturation') else (0.5 if name == 'flip' else 0.0)
    if name in limits:   # uniform on [center - limit, center + limit], as TensorFlow's
      for draws in (values, theirs_values):
        assert center - limits[name] - 1e-5 <= draws.min() < center - 0.95 * limits[name], name
        assert center + 0.95 * limits[name] < draws.max() <= center + limits[name] + 1e-5, name
      tolerance = 4 * limits[name] / np.sqrt(3 * n)   # 4 standard errors of a uniform's mean
    else:
      tolerance = 4 * 0.5 / np.sqrt(n)
    assert abs(values.mean() - center) < tolerance, (name, values.mean())
    assert abs(theirs_values.mean() - center) < tolerance, (name, theirs_values.mean())


def test_grayscale_images_get_brightness_and_contrast_only():
  draws = _device_draws(4, channels=1)
  assert set(draws) == {'flip', 'brightness', 'contrast'}
  none = jax.vmap(lambda k: on_device.Augmentation(True, 0.0).draws(k, 3))(
      jax.random.split(jax.random.key(0), 4))
  assert set(none) == {'flip'}


def test_the_same_examples_are_augmented_alike_on_one_device_and_on_eight():
  spec = dataset_spec('imagenet2012')
  augmentation = on_device.Augmentation(flip=True, photometric_strength=1.0)
  batch = {'image': RNG.integers(0, 256, (16, 8, 8, 3), dtype=np.uint8),
           'aug_seed': np.stack([np.full(16, 3), np.arange(16) + 100], axis=1).astype(np.uint32)}
  one = jax.jit(lambda b: on_device.train_images(b, spec, augmentation, seed=5))(batch)
  mapped = device_map.map_over_devices(
      lambda b: on_device.train_images(b, spec, augmentation, seed=5), in_axes=(0,), out_axes=0)
  eight = device_map.gather_to_host(mapped(device_map.shard(batch)))
  np.testing.assert_array_equal(eight, np.asarray(one))
  # ... and differently for other positions or another run seed.
  other = jax.jit(lambda b: on_device.train_images(b, spec, augmentation, seed=6))(batch)
  assert np.abs(np.asarray(other) - np.asarray(one)).max() > 0.1
