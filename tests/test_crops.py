"""Multi-crop geometry: counts, positions for landscape and portrait images, mirrors."""

import numpy as np
import pytest
import tensorflow as tf

from bn_repro.data import crops, preprocessing


def geometry(mode, height, width, crop=224):
  resized = {s: crops.resized_shape(height, width, s) for s in crops.shorter_sides(mode, crop)}
  return crops.crops_for(mode, crop, resized), resized


@pytest.mark.parametrize('mode', [1, 10, 144])
def test_crop_counts_and_half_are_mirrors(mode):
  boxes, _ = geometry(mode, 300, 400)
  assert len(boxes) == mode
  if mode > 1:
    assert sum(c.flip for c in boxes) == mode // 2
    half = mode // 2
    assert [(c.shorter, c.box) for c in boxes[:half]] == [(c.shorter, c.box) for c in boxes[half:]]


def test_single_crop_is_the_center_of_the_256_image():
  (crop,), resized = geometry(1, 300, 400)
  assert resized[256] == (256, 341)
  assert crop.box == ((256 - 224) // 2, (341 - 224) // 2, 224, 224)


def test_ten_crops_are_corners_and_center_of_the_whole_image():
  boxes, _ = geometry(10, 256, 320)
  assert [c.box[:2] for c in boxes[:5]] == [(0, 0), (0, 96), (32, 0), (32, 96), (16, 48)]


@pytest.mark.parametrize('height,width,axis', [(300, 400, 'width'), (400, 300, 'height')])
def test_144_crops_take_three_squares_along_the_long_side(height, width, axis):
  boxes, resized = geometry(144, height, width)
  assert sorted(resized) == [256, 288, 320, 352]
  squares = [c for c in boxes if c.box[2] != 224]   # the squares resized whole
  assert len(squares) == 4 * 3 * 2
  for s in (256, 288, 320, 352):
    h, w = resized[s]
    assert min(h, w) == s
    offsets = [c.box[:2] for c in squares if c.shorter == s and not c.flip]
    long = (h if axis == 'height' else w) - s
    if axis == 'width':
      assert offsets == [(0, 0), (0, long // 2), (0, long)]
    else:
      assert offsets == [(0, 0), (long // 2, 0), (long, 0)]
    # The five 224 crops of the last square are its corners and center.
    top, left = offsets[-1]
    inner = [c.box[:2] for c in boxes if c.shorter == s and not c.flip and c.box[2] == 224][-5:]
    far = s - 224
    assert inner == [(top, left), (top, left + far), (top + far, left),
                     (top + far, left + far), (top + far // 2, left + far // 2)]
  assert all(c.box[0] + c.box[2] <= resized[c.shorter][0] and
             c.box[1] + c.box[3] <= resized[c.shorter][1] for c in boxes)


def test_sizes_scale_with_the_crop_size():
  assert crops.shorter_sides(144, 28) == (32, 36, 40, 44)
  assert crops.shorter_sides(1, 28) == (32,)
  # ... and with the config's eval crop fraction (1.0: the whole 28x28 image).
  assert crops.shorter_sides(144, 28, 1.0) == (28, 32, 35, 38)
  assert crops.shorter_sides(10, 28, 1.0) == (28,)


@pytest.mark.parametrize('fraction', [0.875, 1.0])
def test_one_crop_equals_the_training_loops_eval_preprocessing(fraction):
  image = np.random.default_rng(0).integers(0, 256, (28, 28, 1), dtype=np.uint8)
  one = crops.multi_crop(tf.constant(image), mode=1, crop_size=28, channels=1,
                         crop_fraction=fraction).numpy()
  loop = preprocessing.eval_image(tf.constant(image), image_size=28, channels=1,
                                  crop_fraction=fraction).numpy()
  np.testing.assert_array_equal(one[0], loop)
  if fraction == 1.0:  # nothing to cut: the image itself, and its mirror in the 10 crops
    np.testing.assert_array_equal(one[0], image)
    ten = crops.multi_crop(tf.constant(image), mode=10, crop_size=28, channels=1,
                           crop_fraction=fraction).numpy()
    np.testing.assert_array_equal(ten[:5], np.stack([image] * 5))
    np.testing.assert_array_equal(ten[5], image[:, ::-1])


def test_tensorflow_crops_cut_the_computed_boxes():
  # An image whose pixels encode their coordinates; 256 x 320 needs no resize at 256.
  rows, cols = np.meshgrid(np.arange(256), np.arange(320), indexing='ij')
  image = np.stack([rows % 256, cols % 256, (rows + cols) % 256], -1).astype(np.uint8)
  out = crops.multi_crop(tf.constant(image), mode=10, crop_size=224, channels=3).numpy()
  assert out.shape == (10, 224, 224, 3)
  np.testing.assert_array_equal(out[0], image[:224, :224])
  np.testing.assert_array_equal(out[1], image[:224, 96:])
  np.testing.assert_array_equal(out[4], image[16:240, 48:272])
  np.testing.assert_array_equal(out[5], image[:224, :224][:, ::-1])
  many = crops.multi_crop(tf.constant(image), mode=144, crop_size=224, channels=3)
  assert tuple(many.shape) == (144, 224, 224, 3)
  portrait = crops.multi_crop(tf.constant(np.transpose(image, (1, 0, 2))), mode=144,
                              crop_size=224, channels=3)
  assert tuple(portrait.shape) == (144, 224, 224, 3)
