"""Where the training loop's batches come from; `config.data.source` picks one.

  'tfds'       the dataset's records through tf.data (data/pipeline.py): real training
  'synthetic'  noise of the dataset's shapes from numpy (data/synthetic.py): the loop's
               speed where TensorFlow is not installed

Both give train_data(global_batch, seed) and eval_data(global_batch) with the same
batches' contract. TensorFlow is imported only when 'tfds' is chosen.
"""

from __future__ import annotations

import importlib
from typing import Any, Protocol

from bn_repro.data.specs import DatasetSpec
from bn_repro.errors import check_choice

SOURCES = {'tfds': ('bn_repro.data.pipeline', 'Source'),
           'synthetic': ('bn_repro.data.synthetic', 'SyntheticSource')}
DEFAULT = 'tfds'


class InputSource(Protocol):
  config: Any
  spec: DatasetSpec

  def train_data(self, *, global_batch: int, seed: int) -> Any: ...

  def eval_data(self, *, global_batch: int, preprocess=None, split: str | None = None) -> Any: ...


def kind(data_config) -> str:
  name = data_config.get('source', DEFAULT)
  check_choice('data.source', name, tuple(SOURCES))
  return name


def open_source(data_config) -> InputSource:
  module, cls = SOURCES[kind(data_config)]
  return getattr(importlib.import_module(module), cls)(data_config)
