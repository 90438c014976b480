"""Finding, preparing and reading the tfds datasets.

- imagenet2012: tfds's builder over the ILSVRC2012 tar files, which the user
  downloads by hand (tfds's "manual_dir"); `scripts/prepare_data.py` prepares it.
- fashion_mnist / mnist: tfds's own prepared dataset when it is there (or may
  be downloaded, `data.download=True`); otherwise a tfds dataset built once from
  local IDX .gz files (as many images as their headers say), e.g. Debian's package
  dataset-fashion-mnist, into a local or gs:// data_dir. Debian's
  files differ from upstream in their gzip headers, so tfds's registered
  download checksums fail on them; the local builder reads them directly.
"""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import hashlib
import os
import struct
import tempfile

import tensorflow_datasets as tfds
from absl import logging
from tensorflow_datasets.image_classification import mnist as tfds_mnist

from bn_repro import files
from bn_repro.parallel import device_map
from bn_repro.errors import DataError
from bn_repro.data import resized, splits
from bn_repro.data.specs import dataset_spec

DEBIAN_FASHION_MNIST = '/usr/share/datasets/fashion-mnist'
IDX_FILES = {
    'train_data': 'train-images-idx3-ubyte.gz',
    'train_labels': 'train-labels-idx1-ubyte.gz',
    'test_data': 't10k-images-idx3-ubyte.gz',
    'test_labels': 't10k-labels-idx1-ubyte.gz',
}


def _idx_count(path) -> int:
  """The number of items an IDX .gz file holds, from its header (magic, count)."""
  with gzip.open(path, 'rb') as f:
    return struct.unpack('>II', f.read(8))[1]


def _local_split_generators(builder, dl_manager):
  local = {k: os.path.join(builder.local_dir, v) for k, v in IDX_FILES.items()}
  paths = dl_manager.extract(local)
  return [
      tfds.core.SplitGenerator(name=split, gen_kwargs=dict(
          num_examples=_idx_count(local[f'{split}_labels']), data_path=paths[f'{split}_data'],
          label_path=paths[f'{split}_labels']))
      for split in ('train', 'test')]


class LocalFashionMnist(tfds_mnist.FashionMNIST):
  """tfds's Fashion-MNIST, built from local IDX .gz files instead of a download."""
  local_dir = DEBIAN_FASHION_MNIST

  def __init__(self, *, local_dir=None, **kwargs):
    if local_dir:
      self.local_dir = local_dir
    super().__init__(**kwargs)

  _split_generators = _local_split_generators


class LocalMnist(tfds_mnist.MNIST):
  """tfds's MNIST, built from local IDX .gz files instead of a download."""
  local_dir = None

  def __init__(self, *, local_dir=None, **kwargs):
    self.local_dir = local_dir
    super().__init__(**kwargs)

  _split_generators = _local_split_generators


LOCAL_BUILDERS = {'fashion_mnist': LocalFashionMnist, 'mnist': LocalMnist}
DEFAULT_LOCAL_DIRS = {'fashion_mnist': DEBIAN_FASHION_MNIST}


def _has_idx_files(directory) -> bool:
  return bool(directory) and all(
      os.path.exists(os.path.join(directory, f)) for f in IDX_FILES.values())


def _is_readable(builder) -> bool:
  """Prepared (or mocked by tfds.testing.mock_data)."""
  try:
    builder.as_dataset(split='train')
    return True
  except (AssertionError, FileNotFoundError, ValueError, KeyError):
    return False


def _prepare_lock_file(builder) -> str:
  """The file separate runs preparing `builder` lock: next to a local data_dir; for a
  gs:// one (an object cannot be locked) a file in this machine's temp folder, named
  after the remote folder."""
  root = builder._data_dir_root  # noqa: SLF001 (tfds has no public name for it)
  if not files.is_remote(root):
    files.make_dirs(root)
    return files.join(root, f'.{builder.name}.prepare.lock')
  key = hashlib.sha256(files.join(root, builder.name).encode()).hexdigest()[:16]
  return os.path.join(tempfile.gettempdir(), f'bn_repro_prepare_{builder.name}_{key}.lock')


@contextlib.contextmanager
def _locked(path: str):
  """Holds an exclusive lock on the local file `path` (created if missing)."""
  try:
    fd = os.open(path, os.O_RDONLY)    # another user's file in /tmp: O_CREAT would be refused
  except FileNotFoundError:
    fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o644)
  try:
    fcntl.flock(fd, fcntl.LOCK_EX)
    yield
  finally:
    os.close(fd)


def _prepare_on_process_zero(builder, **kwargs):
  """Prepares the dataset once, however many processes or runs start at the same time:
  processes of one run wait for process 0; separate runs on this machine take turns
  (a lock file) and the later ones find it prepared. Runs on other machines preparing
  the same gs:// data_dir at the same time are not held back: prepare it once first
  (scripts/prepare_data.py)."""
  if device_map.process_index() == 0:
    with _locked(_prepare_lock_file(builder)):
      builder.download_and_prepare(**kwargs)   # does nothing if a turn before prepared it
  device_map.sync_processes(f'prepared {builder.name}')


def shorter_side_builder(data_dir, side: int) -> resized.Imagenet2012Shorter:
  return resized.Imagenet2012Shorter(config=f'side{side}', data_dir=data_dir,
                                     source_data_dir=data_dir)


def get_builder(data_config):
  """The ready-to-read tfds builder for `data_config.dataset`, or a DataError."""
  name = data_config.dataset
  spec = dataset_spec(name)
  data_dir = data_config.data_dir
  side = data_config.get('stored_shorter_side', 0)
  if name == 'imagenet2012' and side:
    builder = shorter_side_builder(data_dir, side)
    if _is_readable(builder):
      return builder
    raise DataError(f'imagenet2012 with shorter sides of {side} is not prepared: run python '
                    f'scripts/prepare_data.py --dataset imagenet2012 --shorter_side {side}'
                    + (f' --data_dir {data_dir}' if data_dir else ''))
  builder = tfds.builder(spec.tfds_name, data_dir=data_dir)
  if _is_readable(builder):
    return builder

  if name == 'imagenet2012':
    manual_dir = data_config.manual_dir or files.join(builder._data_dir_root, 'downloads',
                                                      'manual')
    raise DataError(
        f'imagenet2012 is not prepared in {builder._data_dir_root}: put '
        f'ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar in {manual_dir} and run '
        f'python scripts/prepare_data.py --dataset imagenet2012 --manual_dir {manual_dir}'
        + (f' --data_dir {data_dir}' if data_dir else ''))

  local_dir = data_config.get('local_dir') or DEFAULT_LOCAL_DIRS.get(name)
  local = LOCAL_BUILDERS[name](local_dir=local_dir, data_dir=data_dir)
  if _is_readable(local):
    return local
  # A builder reads its dataset's description when made: after preparing (here, or by
  # another run that held the lock first), a new one sees the prepared dataset.
  if _has_idx_files(local_dir):
    logging.info('Building tfds dataset %s from %s (once)', local.name, local_dir)
    _prepare_on_process_zero(local)
    return LOCAL_BUILDERS[name](local_dir=local_dir, data_dir=data_dir)
  if data_config.download:
    logging.info('Downloading %s with tfds', name)
    _prepare_on_process_zero(builder)
    return tfds.builder(spec.tfds_name, data_dir=data_dir)
  hint = (' install Debian\'s dataset-fashion-mnist (apt-get install dataset-fashion-mnist),'
          if name == 'fashion_mnist' else '')
  raise DataError(
      f'{name} was not found: no prepared tfds dataset in {builder._data_dir_root} and no IDX '
      f'.gz files in data.local_dir={local_dir!r};{hint} set data.local_dir to a folder '
      f'with the four IDX .gz files, or pass --config.data.download=True to let tfds download it')


def split_part(builder, split: str, fallback_total: int | None) -> splits.SplitPart:
  """This process's disjoint part of `split` (tfds's per-process split)."""
  known = list(builder.info.splits.keys())
  base = split.split('[')[0].split('+')[0].strip()
  if known and base not in known:
    raise DataError(f'{split!r} is not a split of {builder.name}; its splits: '
                    f'{", ".join(sorted(known))} (slices like \'{known[0]}[:1000]\' work too)')
  count, index = device_map.process_count(), device_map.process_index()
  parts = [tfds.split_for_jax_process(split, process_index=i, process_count=count)
           for i in range(count)]
  try:
    sizes = [builder.info.splits[p].num_examples for p in parts]
    total = builder.info.splits[split].num_examples
  except (KeyError, ValueError):
    sizes = []
  if sizes and total == 0:
    raise DataError(f'split {split!r} of {builder.name} is empty: give a slice with examples '
                    f'(e.g. \'{base}[:1000]\')')
  if not sizes or not total:
    # tfds.testing.mock_data has no split sizes: use the config's.
    if not fallback_total:
      raise DataError(f'the size of split {split!r} of {builder.name} is unknown; '
                      'set data.num_train_examples / data.num_eval_examples')
    total = fallback_total
    sizes = splits.even_sizes(total, count)
  # tfds's per-process parts are contiguous and in process order.
  return splits.part_from_sizes(parts[index], sizes, total)
