"""ImageNet's preparation from its tar files, the smaller copy with shorter sides of 320, and
training on that copy with the unchanged pipeline: on a tiny ImageNet made here, in the
layout of ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar."""

import io
import os
import subprocess
import sys
import tarfile

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from bn_repro.benchmarks.input_pipeline import photo_like
from bn_repro.data import datasets
from bn_repro.loop.train import train_and_evaluate
from tests.test_train import mock_imagenet_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASSES = ('n01440764', 'n01443537', 'n01484850')
PER_CLASS, VALIDATION = 8, 6


def _jpeg(rng, height, width):
  return tf.io.encode_jpeg(photo_like(rng, height, width), quality=90).numpy()


def _add(tar, name, data):
  info = tarfile.TarInfo(name)
  info.size = len(data)
  tar.addfile(info, io.BytesIO(data))


def _fake_imagenet(manual_dir, rng):
  """The two tar files, as ILSVRC2012 ships them: one tar per class inside the train tar."""
  with tarfile.open(os.path.join(manual_dir, 'ILSVRC2012_img_train.tar'), 'w') as train:
    for synset in CLASSES:
      inner = io.BytesIO()
      with tarfile.open(fileobj=inner, mode='w') as class_tar:
        for i in range(PER_CLASS):
          _add(class_tar, f'{synset}_{i}.JPEG', _jpeg(rng, 375, 500))
      _add(train, f'{synset}.tar', inner.getvalue())
  with tarfile.open(os.path.join(manual_dir, 'ILSVRC2012_img_val.tar'), 'w') as val:
    for i in range(VALIDATION):
      _add(val, f'ILSVRC2012_val_{i + 1:08d}.JPEG', _jpeg(rng, 500, 400))


def test_prepared_imagenet_its_smaller_copy_and_training_on_it(tmp_path):
  manual, data_dir = tmp_path / 'manual', str(tmp_path / 'tfds')
  manual.mkdir()
  _fake_imagenet(str(manual), np.random.default_rng(0))
  out = subprocess.run(
      [sys.executable, 'scripts/prepare_data.py', '--dataset', 'imagenet2012', '--manual_dir',
       str(manual), '--data_dir', data_dir, '--shorter_side', '320'], cwd=REPO,
      capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]

  original = tfds.builder('imagenet2012', data_dir=data_dir)
  smaller = datasets.shorter_side_builder(data_dir, 320)
  assert smaller.info.splits['train'].num_examples == len(CLASSES) * PER_CLASS
  assert smaller.info.splits['validation'].num_examples == VALIDATION
  assert smaller.info.features['label'].names == original.info.features['label'].names
  for split in ('train', 'validation'):
    before = {x['file_name']: x for x in tfds.as_numpy(original.as_dataset(split=split))}
    for x in tfds.as_numpy(smaller.as_dataset(split=split)):
      source = before[x['file_name']]
      assert x['label'] == source['label']
      assert min(x['image'].shape[:2]) == 320
      height, width = source['image'].shape[:2]
      assert abs(x['image'].shape[0] / x['image'].shape[1] - height / width) < 0.01

  config = mock_imagenet_config('bn_x5')        # the paper's recipe, a small input and width
  config.data.data_dir = data_dir
  config.data.stored_shorter_side = 320
  config.data.num_train_examples = config.data.num_eval_examples = None
  config.data.eval_split = 'validation'
  config.eval_batch_size = 8
  results = train_and_evaluate(config, str(tmp_path / 'run'))
  assert results['step'] == 2 and results['eval_examples'] == VALIDATION
  assert np.isfinite(results['eval_loss'])
