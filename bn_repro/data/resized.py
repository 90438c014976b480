"""imagenet2012 stored smaller: every image's shorter side resized down to SIDE, re-encoded.

A host decodes ImageNet's JPEGs (about 400x350 on average, up to several
megapixels) for every training image; decoding fewer pixels is the cheapest
way to feed an accelerator. `scripts/prepare_data.py --dataset imagenet2012
--shorter_side 320` writes this copy once from the prepared imagenet2012, as
the tfds dataset 'imagenet2012_shorter/side320' with imagenet2012's features,
and `--config.data.stored_shorter_side=320` trains and evaluates on it with the
same pipeline.

Why 320 and quality 90: the evaluation protocols resize the shorter side to
256 (1 and 10 crops) and to 256-352 (144 crops), so a stored 320 keeps every
single-crop and 10-crop input a downscale, as from the original, and leaves
only the 144-crop's largest scale (352) upscaled by 10%; 256 would make
the 144-crop's scales 288-352 upscales of 256. Training crops 8%-100% of the
area and resizes to 224, which from 320 is at most the upscale of the
original's smaller images. Quality 90 keeps the re-encoding loss below what
ImageNet's own JPEGs (about quality 90) already hold. docs/performance.md has
the per-core decoding cost of each size.
"""

from __future__ import annotations

import tensorflow as tf
import tensorflow_datasets as tfds

from bn_repro.data.specs import IMAGENET_STORED_SIDES

QUALITY = 90


def resize_shorter_side_down(image, side: int):
  """uint8 HxWxC with the shorter side resized to `side` (smaller images are kept)."""
  shape = tf.shape(image)
  height, width = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
  scale = tf.minimum(1.0, side / tf.minimum(height, width))
  size = tf.cast(tf.round(tf.stack([height, width]) * scale), tf.int32)
  resized = tf.image.resize(image, size, method='bilinear', antialias=True)
  return tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8)


class Imagenet2012Shorter(tfds.core.GeneratorBasedBuilder):
  """imagenet2012, every image's shorter side at most SIDE pixels (JPEG quality 90)."""

  VERSION = tfds.core.Version('1.0.0')
  BUILDER_CONFIGS = [tfds.core.BuilderConfig(name=f'side{side}',
                                             description=f'shorter side <= {side}')
                     for side in IMAGENET_STORED_SIDES]

  def __init__(self, *, source_data_dir: str | None = None, **kwargs):
    self.source_data_dir = source_data_dir
    super().__init__(**kwargs)

  @property
  def side(self) -> int:
    return int(self.builder_config.name[len('side'):])

  def _source(self):
    return tfds.builder('imagenet2012', data_dir=self.source_data_dir)

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=self._source().info.features,
                                 description=__doc__)

  def _split_generators(self, dl_manager):
    del dl_manager
    return {split: self._generate_examples(split) for split in self._source().info.splits}

  def _generate_examples(self, split: str):
    def shrink(example):
      image = tf.image.decode_jpeg(example['image'], channels=3)
      image = tf.image.encode_jpeg(resize_shorter_side_down(image, self.side), quality=QUALITY)
      return dict(example, image=image)

    source = self._source().as_dataset(split=split,
                                       decoders={'image': tfds.decode.SkipDecoding()})
    for example in tfds.as_numpy(source.map(shrink, num_parallel_calls=tf.data.AUTOTUNE)):
      yield example['file_name'].decode(), {'image': example['image'], 'label': example['label'],
                                            'file_name': example['file_name'].decode()}
