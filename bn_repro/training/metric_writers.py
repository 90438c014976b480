"""Where metrics go: TensorBoard and log lines (clu), plus a JSON-lines file to plot from
(Workdir.read_metrics reads it back).

Only process 0 writes files; other processes only log.
"""

from __future__ import annotations

import json
import time
from typing import Any, Mapping

import numpy as np
from clu import metric_writers
from clu.metric_writers import interface

from bn_repro import files
from bn_repro.parallel import device_map


class JsonLinesWriter(interface.MetricWriter):
  """Appends a {"step": s, "name": value, ...} line for every write_scalars call.

  Each line reaches the file at once (a killed run keeps what it logged); on
  cloud storage, which cannot append, the lines are sent at most every
  REMOTE_FLUSH_SECONDS and at every flush.
  """
  REMOTE_FLUSH_SECONDS = 60

  def __init__(self, path: str):
    self.path = path
    self._unsent = []
    self._sent_at = time.monotonic()

  def write_scalars(self, step: int, scalars: Mapping[str, Any]):
    record = {'step': int(step)}
    record.update({k: float(np.asarray(v)) for k, v in scalars.items()})
    self._unsent.append(json.dumps(record) + '\n')
    if not files.is_remote(self.path) or (
        time.monotonic() - self._sent_at > self.REMOTE_FLUSH_SECONDS):
      self.flush()

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
    if self._unsent:
      files.append_text(self.path, ''.join(self._unsent))
      self._unsent = []
      self._sent_at = time.monotonic()

  def close(self):
    self.flush()


def create_writer(directory: str, *, jsonl_file: str | None = None) -> metric_writers.MetricWriter:
  """TensorBoard events in `directory` and log lines; also JSON lines in jsonl_file if given."""
  if device_map.process_index() > 0:
    return metric_writers.create_default_writer(just_logging=True)
  files.make_dirs(directory)
  writers = [metric_writers.create_default_writer(directory, asynchronous=False)]
  if jsonl_file:
    writers.append(JsonLinesWriter(jsonl_file))
  return metric_writers.MultiWriter(writers)
