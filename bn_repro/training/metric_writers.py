"""Where metrics go: log lines, TensorBoard events (clu, where TensorFlow is installed), and
a JSON-lines file to plot from (Workdir.read_metrics reads it back).

Only process 0 writes files; other processes only log. Without TensorFlow or clu (an
accelerator image that has neither) training still runs: its metrics go to the log and
the JSON-lines file, and a warning says that TensorBoard events are not written.
"""

from __future__ import annotations

import json
import time
from typing import Any, Mapping

import numpy as np
from absl import logging

from bn_repro import files
from bn_repro.parallel import device_map

try:
  # clu's metric_writers package imports TensorFlow for its TensorBoard writer.
  from clu import metric_writers as clu_writers
except ModuleNotFoundError as error:
  if (error.name or '').split('.')[0] not in ('clu', 'tensorflow', 'tensorboard'):
    raise
  clu_writers = None


class JsonLinesWriter:
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

  def flush(self):
    if self._unsent:
      files.append_text(self.path, ''.join(self._unsent))
      self._unsent = []
      self._sent_at = time.monotonic()

  def close(self):
    self.flush()


class LogWriter:
  """One log line per write_scalars call (what clu's logging writer prints)."""

  def write_scalars(self, step: int, scalars: Mapping[str, Any]):
    values = ', '.join(f'{k}={float(np.asarray(v)):.6g}' for k, v in sorted(scalars.items()))
    logging.info('[%d] %s', step, values)

  def flush(self):
    pass

  def close(self):
    pass


class Writers:
  """Several writers as one."""

  def __init__(self, writers):
    self.writers = list(writers)

  def write_scalars(self, step: int, scalars: Mapping[str, Any]):
    for writer in self.writers:
      writer.write_scalars(step, scalars)

  def flush(self):
    for writer in self.writers:
      writer.flush()

  def close(self):
    for writer in self.writers:
      writer.close()


def create_writer(directory: str, *, jsonl_file: str | None = None) -> Writers:
  """Log lines, TensorBoard events in `directory` and, if given, JSON lines in jsonl_file."""
  if device_map.process_index() > 0:
    return Writers([LogWriter()])
  files.make_dirs(directory)
  if clu_writers is not None:
    writers = [clu_writers.create_default_writer(directory, asynchronous=False)]
  else:
    logging.warning('TensorFlow or clu is not installed: no TensorBoard events in %s (metrics '
                    'go to the log%s)', directory, f' and {jsonl_file}' if jsonl_file else '')
    writers = [LogWriter()]
  if jsonl_file:
    writers.append(JsonLinesWriter(jsonl_file))
  return Writers(writers)
