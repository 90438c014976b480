"""Multi-crop evaluation geometry (GoogLeNet's protocols), shared by numpy tests and tf.data.

Sizes are given for the paper's 224 crops from a 256 image (crop fraction
0.875) and scale with the crop size and the config's eval crop fraction: a
28x28 model with fraction 0.875 gets the same protocol in proportion, and one
with fraction 1.0 (the small twins: Fashion-MNIST images are already cropped
to the object) gets its scales 28, 32, 35, 38, where the 10 crops reduce to
the whole image and its mirror, five times each.

- 1 crop: shorter side to 256, the center 224.
- 10 crops: shorter side to 256, the 4 corner and the center 224 crops, and
  their mirrors.
- 144 crops (GoogLeNet): shorter side to 256, 288, 320 and 352; the left,
  center and right squares (top, center, bottom for portrait images); from each
  square the 4 corner and the center 224 crops and the square resized to 224;
  and the mirrors of all: 4 x 3 x 6 x 2.

The geometry functions use only +, -, // and indexing, so they run on Python
ints (for tests) and on tf int32 tensors (in the pipeline) alike.
"""

from __future__ import annotations

import dataclasses

import tensorflow as tf

from bn_repro.data import preprocessing

CROP_MODES = (1, 10, 144)
REFERENCE_CROP = 224
REFERENCE_FRACTION = 0.875   # 224 / 256
SINGLE_SCALE = 256
MULTI_SCALES = (256, 288, 320, 352)


@dataclasses.dataclass(frozen=True)
class Crop:
  """One crop: resize the shorter side to `shorter`, cut `box`, resize it to the crop size, maybe mirror."""
  shorter: int
  box: tuple          # (top, left, height, width) in the resized image
  flip: bool


def scaled(size: int, crop_size: int, crop_fraction: float = REFERENCE_FRACTION) -> int:
  """A size given for 224 crops of a 256 image, for crops of crop_size at crop_fraction."""
  return round(size * crop_size * REFERENCE_FRACTION / (REFERENCE_CROP * crop_fraction))


def resized_shape(height, width, shorter):
  """(h, w) with the shorter side resized to `shorter`, aspect kept (Python ints)."""
  if height <= width:
    return shorter, max(shorter, round(width * shorter / height))
  return max(shorter, round(height * shorter / width)), shorter


def five_boxes(top, left, height, width, crop):
  """(top, left) of the 4 corner and the center `crop` boxes inside a region."""
  bottom, right = top + height - crop, left + width - crop
  return [(top, left), (top, right), (bottom, left), (bottom, right),
          (top + (height - crop) // 2, left + (width - crop) // 2)]


def squares(height, width, side):
  """Left/center/right squares of a landscape image, top/center/bottom of a portrait one.

  After resizing the shorter side to `side`, one of height, width equals side,
  so the same offsets give the right three squares for either orientation.
  """
  return [(0, 0), ((height - side) // 2, (width - side) // 2), (height - side, width - side)]


def crops_for(mode: int, crop_size: int, resized: dict,
              crop_fraction: float = REFERENCE_FRACTION) -> list[Crop]:
  """The crops of `mode`; resized[shorter] = (height, width) after resizing to `shorter`."""
  if mode not in CROP_MODES:
    raise ValueError(f'crops={mode} is not one of {CROP_MODES}')
  if mode in (1, 10):
    s = scaled(SINGLE_SCALE, crop_size, crop_fraction)
    h, w = resized[s]
    boxes = five_boxes(0, 0, h, w, crop_size)
    if mode == 1:
      return [Crop(s, boxes[4] + (crop_size, crop_size), False)]
    return [Crop(s, box + (crop_size, crop_size), flip)
            for flip in (False, True) for box in boxes]
  result = []
  for flip in (False, True):
    for size in MULTI_SCALES:
      s = scaled(size, crop_size, crop_fraction)
      h, w = resized[s]
      for top, left in squares(h, w, s):
        result += [Crop(s, box + (crop_size, crop_size), flip)
                   for box in five_boxes(top, left, s, s, crop_size)]
        result.append(Crop(s, (top, left, s, s), flip))
  return result


def shorter_sides(mode: int, crop_size: int,
                  crop_fraction: float = REFERENCE_FRACTION) -> tuple[int, ...]:
  sizes = MULTI_SCALES if mode == 144 else (SINGLE_SCALE,)
  return tuple(scaled(s, crop_size, crop_fraction) for s in sizes)


def multi_crop(image, *, mode: int, crop_size: int, channels: int,
               crop_fraction: float = REFERENCE_FRACTION):
  """tf: one image (JPEG bytes or uint8 HxWxC) -> uint8 [num_crops, crop, crop, C]."""
  image = preprocessing.decode(image, channels)
  resized_images, resized = {}, {}
  for s in shorter_sides(mode, crop_size, crop_fraction):
    resized_images[s] = preprocessing.resize_shorter_side(image, s)
    shape = tf.shape(resized_images[s])
    resized[s] = (shape[0], shape[1])
  out = []
  for crop in crops_for(mode, crop_size, resized, crop_fraction):
    top, left, h, w = crop.box
    piece = tf.slice(resized_images[crop.shorter], [top, left, 0], [h, w, -1])
    if not (isinstance(h, int) and h == crop_size):
      piece = preprocessing.resize(piece, [crop_size, crop_size])
    if crop.flip:
      piece = tf.image.flip_left_right(piece)
    out.append(piece)
  result = tf.stack(out)
  result.set_shape([len(out), crop_size, crop_size, channels])
  return result
