"""Multi-crop evaluation geometry (SPEC section 6), shared by numpy tests and tf.data.

Sizes are given for the paper's 224 crops and scale with the crop size, so a
28x28 model gets the same protocol in proportion.

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

from bn_repro.input_pipeline import preprocessing

CROP_MODES = (1, 10, 144)
REFERENCE_CROP = 224
SINGLE_SCALE = 256
MULTI_SCALES = (256, 288, 320, 352)


@dataclasses.dataclass(frozen=True)
class Crop:
  """One crop: resize the shorter side to `shorter`, cut `box`, resize it to the crop size, maybe mirror."""
  shorter: int
  box: tuple          # (top, left, height, width) in the resized image
  flip: bool


def scaled(size: int, crop_size: int) -> int:
  """A size given for 224 crops, for crops of crop_size."""
  return round(size * crop_size / REFERENCE_CROP)


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


def crops_for(mode: int, crop_size: int, resized: dict) -> list[Crop]:
  """The crops of `mode`; resized[shorter] = (height, width) after resizing to `shorter`."""
  if mode not in CROP_MODES:
    raise ValueError(f'crops={mode} is not one of {CROP_MODES}')
  if mode in (1, 10):
    s = scaled(SINGLE_SCALE, crop_size)
    h, w = resized[s]
    boxes = five_boxes(0, 0, h, w, crop_size)
    if mode == 1:
      return [Crop(s, boxes[4] + (crop_size, crop_size), False)]
    return [Crop(s, box + (crop_size, crop_size), flip)
            for flip in (False, True) for box in boxes]
  result = []
  for flip in (False, True):
    for size in MULTI_SCALES:
      s = scaled(size, crop_size)
      h, w = resized[s]
      for top, left in squares(h, w, s):
        result += [Crop(s, box + (crop_size, crop_size), flip)
                   for box in five_boxes(top, left, s, s, crop_size)]
        result.append(Crop(s, (top, left, s, s), flip))
  return result


def shorter_sides(mode: int, crop_size: int) -> tuple[int, ...]:
  if mode == 144:
    return tuple(scaled(s, crop_size) for s in MULTI_SCALES)
  return (scaled(SINGLE_SCALE, crop_size),)


def multi_crop(image, *, mode: int, crop_size: int, channels: int):
  """tf: one image (JPEG bytes or uint8 HxWxC) -> uint8 [num_crops, crop, crop, C]."""
  image = preprocessing.decode(image, channels)
  resized_images, resized = {}, {}
  for s in shorter_sides(mode, crop_size):
    resized_images[s] = preprocessing.resize_shorter_side(image, s)
    shape = tf.shape(resized_images[s])
    resized[s] = (shape[0], shape[1])
  out = []
  for crop in crops_for(mode, crop_size, resized):
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
