"""Where metrics go: TensorBoard and log lines (clu), plus a JSON-lines file to plot from
(Workdir.read_metrics reads it back).

Only process 0 writes files; other processes only log.
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping

import numpy as np
from clu import metric_writers
from clu.metric_writers import interface

from bn_repro.parallel import device_map


class JsonLinesWriter(interface.MetricWriter):
  """Appends {"step": s, "name": value, ...} lines for every write_scalars call."""

  def __init__(self, path: str):
    self.path = path
    self._file = open(path, 'a', encoding='utf-8')

  def write_scalars(self, step: int, scalars: Mapping[str, Any]):
    record = {'step': int(step)}
    record.update({k: float(np.asarray(v)) for k, v in scalars.items()})
    self._file.write(json.dumps(record) + '\n')

  def write_summaries(self, step, values, metadata=None):
    pass

  def write_images(self, step, images):
    pass

  def write_videos(self, step, videos):
    pass

  def write_audios(self, step, audios, *, sample_rate):
    pass

  def write_texts(self, step, texts):
    pass

  def write_histograms(self, step, arrays, num_buckets=None):
    pass

  def write_hparams(self, hparams):
    pass

  def flush(self):
    self._file.flush()

  def close(self):
    self._file.close()


def create_writer(directory: str, *, jsonl_file: str | None = None) -> metric_writers.MetricWriter:
  """TensorBoard events in `directory` and log lines; also JSON lines in jsonl_file if given."""
  if device_map.process_index() > 0:
    return metric_writers.create_default_writer(just_logging=True)
  os.makedirs(directory, exist_ok=True)
  writers = [metric_writers.create_default_writer(directory, asynchronous=False)]
  if jsonl_file:
    writers.append(JsonLinesWriter(jsonl_file))
  return metric_writers.MultiWriter(writers)
