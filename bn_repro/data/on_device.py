"""What happens to a batch on the device, inside the jitted steps (no TensorFlow here).

Batches arrive as uint8 images (4x fewer bytes to ship than float32). The steps
standardize them here and, when training with `data.augment_on_device`, also
do the Inception-style augmentation after the crop: a random horizontal flip
and the photometric distortions (brightness, saturation, hue, contrast, in
TensorFlow's order and with its definitions), so the host only decodes, crops
and resizes.

Every example's randomness comes from its own key, made from the run's seed and
the example's place in the data (the host sends `aug_seed` = [epoch stream,
position]), never from the device it lands on: a run augments the same way on
any number of devices, and a resumed run exactly as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from bn_repro.data.specs import DatasetSpec

# Photometric distortion ranges at strength 1 (TF-slim's Inception values).
BRIGHTNESS_DELTA = 32 / 255
SATURATION_RANGE = 0.5
HUE_DELTA = 0.2
CONTRAST_RANGE = 0.5


def standardize(images, spec: DatasetSpec, dtype=jnp.float32):
  """uint8 images (or float images in [0, 255]) -> (x / 255 - mean) / std, per channel."""
  mean = jnp.asarray(spec.mean, jnp.float32) * 255
  std = jnp.asarray(spec.std, jnp.float32) * 255
  return ((images.astype(jnp.float32) - mean) / std).astype(dtype)


# --- The colour operations, on one float image [H, W, C] in [0, 1] (as tf.image's).

def adjust_brightness(image, delta):
  return image + delta


def adjust_contrast(image, factor):
  mean = jnp.mean(image, axis=(0, 1), keepdims=True)
  return (image - mean) * factor + mean


def rgb_to_hsv(image):
  """[H, W, 3] RGB -> HSV, hue in [0, 1) (tf.image.rgb_to_hsv)."""
  r, g, b = image[..., 0], image[..., 1], image[..., 2]
  value = jnp.max(image, axis=-1)
  chroma = value - jnp.min(image, axis=-1)
  safe_value = jnp.where(value > 0, value, 1.0)
  safe_chroma = jnp.where(chroma > 0, chroma, 1.0)
  saturation = jnp.where(value > 0, chroma / safe_value, 0.0)
  hue = jnp.where(value == r, (g - b) / safe_chroma,
                  jnp.where(value == g, 2.0 + (b - r) / safe_chroma, 4.0 + (r - g) / safe_chroma))
  hue = jnp.where(chroma > 0, (hue / 6.0) % 1.0, 0.0)
  return jnp.stack([hue, saturation, value], axis=-1)


def hsv_to_rgb(image):
  """The inverse of rgb_to_hsv (tf.image.hsv_to_rgb)."""
  hue, saturation, value = image[..., 0], image[..., 1], image[..., 2]
  h = (hue % 1.0) * 6.0
  channel = lambda n: value - value * saturation * jnp.clip(  # noqa: E731
      jnp.minimum((n + h) % 6.0, 4.0 - (n + h) % 6.0), 0.0, 1.0)
  return jnp.stack([channel(5.0), channel(3.0), channel(1.0)], axis=-1)


def adjust_saturation_and_hue(image, factor=1.0, delta=0.0):
  """tf.image.adjust_saturation by `factor`, then tf.image.adjust_hue by `delta`, in one
  round trip through HSV (the same result: going back and forth changes nothing else)."""
  hsv = rgb_to_hsv(image)
  saturation = jnp.clip(hsv[..., 1] * factor, 0.0, 1.0)
  hue = (hsv[..., 0] + delta) % 1.0
  return hsv_to_rgb(jnp.stack([hue, saturation, hsv[..., 2]], axis=-1))



@dataclasses.dataclass(frozen=True)
class Augmentation:
  """The training augmentation done on the device (after the host's crop and resize)."""
  flip: bool = True
  photometric_strength: float = 0.0

  @classmethod
  def from_config(cls, data_config) -> 'Augmentation | None':
    """The config's on-device augmentation, or None when the host augments."""
    if not data_config.augment_on_device:
      return None
    return cls(flip=bool(data_config.flip),
               photometric_strength=float(data_config.photometric_strength))

  def draws(self, key, channels: int) -> dict:
    """The random choices for one example (a dict of scalars)."""
    keys = jax.random.split(key, 5)
    s = self.photometric_strength
    uniform = lambda k, low, high: jax.random.uniform(k, (), jnp.float32, low, high)  # noqa: E731
    draws = {'flip': jax.random.bernoulli(keys[0]) & self.flip}
    if s > 0:
      draws['brightness'] = uniform(keys[1], -BRIGHTNESS_DELTA * s, BRIGHTNESS_DELTA * s)
      draws['contrast'] = uniform(keys[4], 1 - CONTRAST_RANGE * s, 1 + CONTRAST_RANGE * s)
      if channels == 3:
        draws['saturation'] = uniform(keys[2], 1 - SATURATION_RANGE * s, 1 + SATURATION_RANGE * s)
        hue = min(HUE_DELTA * s, 0.5)
        draws['hue'] = uniform(keys[3], -hue, hue)
    return draws

  def apply(self, image, draws: dict):
    """One uint8 image [H, W, C] -> float32 in [0, 255], augmented by `draws`."""
    x = image.astype(jnp.float32) / 255.0
    x = jnp.where(draws['flip'], x[:, ::-1], x)
    if 'brightness' in draws:    # TensorFlow's order: brightness, saturation, hue, contrast
      x = adjust_brightness(x, draws['brightness'])
      if 'saturation' in draws:
        x = adjust_saturation_and_hue(x, draws['saturation'], draws['hue'])
      x = adjust_contrast(x, draws['contrast'])
      x = jnp.clip(x, 0.0, 1.0)
    return x * 255.0


def example_keys(seed: int, aug_seeds):
  """One key per example, from the run's seed and its [stream, position] (uint32 [B, 2])."""
  base = jax.random.key(seed)
  return jax.vmap(lambda s: jax.random.fold_in(jax.random.fold_in(base, s[0]), s[1]))(aug_seeds)


def train_images(batch: dict, spec: DatasetSpec, augmentation: Augmentation | None, seed: int,
                 dtype=jnp.float32):
  """The standardized images the model trains on: augmented here first when the host did not."""
  images = batch['image']
  if augmentation is not None:
    keys = example_keys(seed, batch['aug_seed'])
    images = jax.vmap(lambda image, key: augmentation.apply(
        image, augmentation.draws(key, spec.channels)))(images, keys)
  return standardize(images, spec, dtype)
