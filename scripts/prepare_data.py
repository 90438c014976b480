"""Prepares a tfds dataset once, explicitly (the only command that may download).

  # ImageNet: put ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar in MANUAL_DIR
  python scripts/prepare_data.py --dataset imagenet2012 --manual_dir MANUAL_DIR
  # ... then a copy with shorter sides of 320, faster to decode (--config.data.stored_shorter_side=320)
  python scripts/prepare_data.py --dataset imagenet2012 --shorter_side 320
  # Fashion-MNIST from Debian's dataset-fashion-mnist, or from IDX files elsewhere
  python scripts/prepare_data.py --dataset fashion_mnist [--local_dir DIR]
  # MNIST / Fashion-MNIST through tfds's own download
  python scripts/prepare_data.py --dataset mnist --download
"""

import ml_collections
from absl import flags, logging

from bn_repro import cli
from bn_repro.data import specs
from bn_repro.errors import UserError

flags.DEFINE_enum('dataset', None, list(specs.DATASETS), 'Dataset to prepare.')
flags.DEFINE_string('data_dir', None, 'tfds data_dir (default: tfds\'s).')
flags.DEFINE_string('manual_dir', None, 'Folder holding the ILSVRC2012 tar files.')
flags.DEFINE_string('local_dir', None, 'Folder holding MNIST-format IDX .gz files.')
flags.DEFINE_bool('download', False, 'Let tfds download the dataset.')
flags.DEFINE_integer('shorter_side', 0, 'imagenet2012: also write a copy with every shorter side '
                     'at most this (256, 288, 320 or 352), from the prepared imagenet2012.')
flags.mark_flags_as_required(['dataset'])
cli.answer_help()   # before the imports below, which load TensorFlow and JAX (seconds)

import tensorflow_datasets as tfds  # noqa: E402
from bn_repro.data import datasets  # noqa: E402


def main(argv):
  del argv
  f = flags.FLAGS
  if f.shorter_side and (f.dataset != 'imagenet2012' or
                         f.shorter_side not in specs.IMAGENET_STORED_SIDES):
    raise UserError(f'--shorter_side={f.shorter_side}: for imagenet2012 only, one of '
                    f'{specs.IMAGENET_STORED_SIDES}')
  if f.dataset == 'imagenet2012':
    builder = tfds.builder('imagenet2012', data_dir=f.data_dir)
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=f.manual_dir))
    if f.shorter_side:
      builder = datasets.shorter_side_builder(f.data_dir, f.shorter_side)
      builder.download_and_prepare()
  else:
    builder = datasets.get_builder(ml_collections.ConfigDict(dict(
        dataset=f.dataset, data_dir=f.data_dir, local_dir=f.local_dir,
        download=f.download, manual_dir=None)))
  logging.info('%s is ready in %s: %s', f.dataset, builder.data_dir, builder.info.splits)


if __name__ == '__main__':
  cli.start(main)
