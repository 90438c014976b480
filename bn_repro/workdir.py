"""A run's workdir: every file in it is named here, and written through here.

  <workdir>/config.json              the config the run trains with
  <workdir>/config_history.jsonl     earlier configs, when a change was allowed on purpose
  <workdir>/checkpoints/<step>/      orbax checkpoints (model, training state, metadata)
  <workdir>/metrics.jsonl            one JSON record per metrics write (for plots)
  <workdir>/events.out.tfevents.*    TensorBoard
  <workdir>/targets.json             first step reaching each target accuracy
  <workdir>/results.json             the final evaluation
  <workdir>/eval/<name>_step<S>.*    evaluations of checkpoints (JSON, and .npz probabilities)
  <workdir>/population_stats/<S>/    population statistics (Algorithm 2) of checkpoint S:
                                     stats/ (orbax), meta.json, ema_gap.json
                                     (<S>.incomplete/, <S>.replaced/ while a save is swapped in)
  <workdir>/ics_probe.jsonl          internal-covariate-shift probe records
  <workdir>/ics_<layer>.png          the probe's plots (and ics_<layer>_drift.png)
  <workdir>/.lock                    held by the training run working in it

Only process 0 writes; every process may read. Every file is written whole
(files.write_text), so a crash never leaves half a JSON file behind; a file
that is damaged anyway is a one-line error naming it.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import socket
import time

import ml_collections
from absl import logging

from bn_repro import files
from bn_repro.errors import UserError
from bn_repro.parallel import device_map

CONFIG_FILE = 'config.json'
CONFIG_HISTORY_FILE = 'config_history.jsonl'
CHECKPOINT_DIR = 'checkpoints'
METRICS_FILE = 'metrics.jsonl'
TARGETS_FILE = 'targets.json'
RESULTS_FILE = 'results.json'
EVAL_DIR = 'eval'
POPULATION_DIR = 'population_stats'
POPULATION_STATS_ITEM = 'stats'
POPULATION_META_FILE = 'meta.json'
EMA_GAP_FILE = 'ema_gap.json'
PROBE_FILE = 'ics_probe.jsonl'
LOCK_FILE = '.lock'


def write_json_on_process_0(path: str, value) -> None:
  """Writes `value` as indented JSON (process 0 only), creating the folder; readers see the
  old file or the new one, never half of one."""
  if device_map.process_index() != 0:
    return
  files.make_dirs(os.path.dirname(files.absolute(path)))
  files.write_text(path, json.dumps(value, indent=1))


def read_json(path: str):
  """The JSON value in `path`, or a one-line UserError if the file is damaged."""
  try:
    return json.loads(files.read_text(path))
  except ValueError as e:
    raise UserError(f'{path} is damaged ({e}); restore it from a backup or delete it') from e


def read_json_lines(path: str) -> list[dict]:
  """The records of a JSON-lines file; a last line cut short by a crash is dropped."""
  lines = files.read_text(path).splitlines()
  records = []
  for number, line in enumerate(lines):
    if not line.strip():
      continue
    try:
      records.append(json.loads(line))
    except ValueError as e:
      if number == len(lines) - 1:
        break
      raise UserError(f'{path} is damaged at line {number + 1} ({e})') from e
  return records


def _pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


def process_start_time(pid: int) -> int | None:
  """When process `pid` started (clock ticks since boot, Linux's /proc), None if unknown:
  with the PID it names one process, even after the PID is reused."""
  try:
    with open(f'/proc/{pid}/stat', encoding='utf-8') as f:
      stat = f.read()
  except OSError:
    return None
  # The command name (field 2) may hold spaces and parentheses: count from its end.
  return int(stat[stat.rindex(')') + 2:].split()[19])


def _holder_alive(holder: dict, host: str) -> bool:
  """Whether the lock's holder may still be running: on another host it is assumed so; on
  this host its PID must be alive and, when the lock recorded it, started at the same time."""
  if holder.get('host') != host:
    return True
  pid = int(holder.get('pid', -1))
  if pid <= 0 or not _pid_alive(pid):
    return False
  recorded = holder.get('process_start')
  return recorded is None or process_start_time(pid) in (None, recorded)


# A lock file that cannot be read is taken for one being written only while it is this young.
_UNREADABLE_LOCK_GRACE_SECONDS = 3.0


class Workdir:
  """The files of one run's workdir (see the module docstring)."""

  def __init__(self, path: str):
    self.path = files.absolute(path)

  def __str__(self) -> str:
    return self.path

  def file(self, name: str) -> str:
    return files.join(self.path, name)

  @property
  def config_file(self) -> str:
    return self.file(CONFIG_FILE)

  @property
  def checkpoint_dir(self) -> str:
    return self.file(CHECKPOINT_DIR)

  @property
  def metrics_file(self) -> str:
    return self.file(METRICS_FILE)

  @property
  def targets_file(self) -> str:
    return self.file(TARGETS_FILE)

  @property
  def results_file(self) -> str:
    return self.file(RESULTS_FILE)

  @property
  def probe_file(self) -> str:
    return self.file(PROBE_FILE)

  @property
  def population_root(self) -> str:
    return self.file(POPULATION_DIR)

  def population_dir(self, step: int) -> str:
    return files.join(self.population_root, str(step))

  def population_staging_dir(self, step: int) -> str:
    """Where new statistics of `step` are written before they replace the old ones."""
    return f'{self.population_dir(step)}.incomplete'

  def population_replaced_dir(self, step: int) -> str:
    """Where the old statistics of `step` wait while the new ones move in."""
    return f'{self.population_dir(step)}.replaced'

  @staticmethod
  def population_stats_item(directory: str) -> str:
    """The statistics inside a population_dir (or its staging copy)."""
    return files.join(directory, POPULATION_STATS_ITEM)

  @staticmethod
  def population_meta_file(directory: str) -> str:
    """How the statistics in a population_dir (or its staging copy) were made."""
    return files.join(directory, POPULATION_META_FILE)

  def probe_plot(self, layer: str, *, drift: bool = False) -> str:
    """The probe's plot of `layer` (its percentiles, or with drift its drift)."""
    name = layer.replace('/', '_')
    return self.file(f'ics_{name}_drift.png' if drift else f'ics_{name}.png')

  def eval_files(self, name: str, step: int) -> tuple[str, str]:
    """(JSON record, .npz probabilities) of the evaluation `name` of checkpoint `step`."""
    base = files.join(self.file(EVAL_DIR), f'{name}_step{step}')
    return base + '.json', base + '.npz'

  def create(self) -> None:
    """Creates the workdir, or says in one line why it cannot be one."""
    if files.exists(self.path) and not files.is_dir(self.path):
      raise UserError(f'--workdir {self.path} is a file, not a folder')
    try:
      files.make_dirs(self.path)
    except OSError as e:
      raise UserError(f'cannot create --workdir {self.path}: {e.strerror or e}') from e
    if not self.writable():
      raise UserError(f'--workdir {self.path} is not writable')

  def writable(self) -> bool:
    """Whether this process may write here (cloud storage: assumed; permissions show on write)."""
    return files.is_remote(self.path) or os.access(self.path, os.W_OK)

  # The config: the run's identity.

  def saved_config(self) -> ml_collections.ConfigDict | None:
    if not files.exists(self.config_file):
      return None
    return ml_collections.ConfigDict(read_json(self.config_file))

  def load_config(self) -> ml_collections.ConfigDict:
    """The config this workdir was trained with."""
    config = self.saved_config()
    if config is None:
      raise UserError(f'{self.config_file} does not exist: is {self.path} a training workdir?')
    return config

  def write_config(self, config: ml_collections.ConfigDict, *, replaced_because: str = '') -> None:
    """Records the config; when it replaces another, the old one goes to the history file."""
    if replaced_because and device_map.process_index() == 0:
      previous = read_json(self.config_file)
      record = {'replaced': datetime.datetime.now().isoformat(timespec='seconds'),
                'difference': replaced_because, 'config': previous}
      files.append_text(self.file(CONFIG_HISTORY_FILE), json.dumps(record) + '\n')
    write_json_on_process_0(self.config_file, json.loads(config.to_json_best_effort()))

  # Results.

  def read_results(self) -> dict | None:
    return read_json(self.results_file) if files.exists(self.results_file) else None

  def read_metrics(self) -> list[dict]:
    """One record per step in step order, merging every write at that step (a later value of
    a metric at the same step replaces the earlier)."""
    merged = {}
    for record in read_json_lines(self.metrics_file):
      merged.setdefault(record['step'], {}).update(record)
    return [merged[step] for step in sorted(merged)]

  def keep_metrics_up_to(self, step: int) -> None:
    """Drops the metrics written after `step` (a resumed run writes them again)."""
    if device_map.process_index() != 0 or not files.exists(self.metrics_file):
      return
    lines = files.read_text(self.metrics_file).splitlines()
    kept = [line for line in lines if _step_of(line) is not None and _step_of(line) <= step]
    if len(kept) != len(lines):
      files.write_text(self.metrics_file, ''.join(line + '\n' for line in kept))

  # The lock of the training run working here.

  @contextlib.contextmanager
  def lock(self):
    """Held while a training run works here; another run on the same workdir is refused.
    Taken over: a lock left by a dead process on this host (recognised by its PID and start
    time, so a reused PID does not count), and a lock file that cannot be read (written
    half by a crash), with a warning."""
    if device_map.process_index() != 0:
      yield
      return
    path = self.file(LOCK_FILE)
    owner = {'pid': os.getpid(), 'host': socket.gethostname(),
             'process_start': process_start_time(os.getpid()),
             'since': datetime.datetime.now().isoformat(timespec='seconds')}
    first_unreadable = None
    while not _create_exclusive(path, json.dumps(owner)):
      try:
        holder = json.loads(files.read_text(path))
        if not isinstance(holder, dict):
          raise ValueError('not a JSON object')
        int(holder.get('pid', -1))
      except FileNotFoundError:
        continue             # released meanwhile: try again
      except (ValueError, TypeError, UnicodeDecodeError) as e:
        # Maybe another run created it a moment ago and is writing it: wait that long.
        first_unreadable = first_unreadable or time.monotonic()
        if time.monotonic() - first_unreadable < _UNREADABLE_LOCK_GRACE_SECONDS:
          time.sleep(0.5)
          continue
        logging.warning('%s cannot be read (%s): taking it over as stale', path, e)
        files.remove(path)
        continue
      if not _holder_alive(holder, owner['host']):
        files.remove(path)   # left by a process that died
        continue
      raise UserError(
          f'{self.path} is in use by process {holder.get("pid", "?")} on '
          f'{holder.get("host", "?")} since {holder.get("since", "?")}; wait for it to '
          f'finish, or delete {path} if that process is gone')
    try:
      yield
    finally:
      files.remove(path)


def _step_of(line: str) -> int | None:
  try:
    return int(json.loads(line)['step'])
  except (ValueError, KeyError, TypeError):
    return None


def _create_exclusive(path: str, text: str) -> bool:
  """Creates `path` with `text` unless it exists (atomic locally; on cloud storage a check
  and a write, which two runs starting in the same second could both pass)."""
  if files.is_remote(path):
    if files.exists(path):
      return False
    files.write_text(path, text)
    return True
  try:
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
  except FileExistsError:
    return False
  with os.fdopen(fd, 'w', encoding='utf-8') as f:
    f.write(text)
  return True
