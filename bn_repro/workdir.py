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
import dataclasses
import datetime
import json
import os
import socket
import time
import uuid

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


def _process_gone(holder: dict) -> bool:
  """Whether the holder's process (on this host) is gone: its PID is dead or, when the lock
  recorded it, now names a process started at another time (a reused PID)."""
  pid = int(holder.get('pid', -1))
  if pid <= 0 or not _pid_alive(pid):
    return True
  recorded = holder.get('process_start')
  return recorded is not None and process_start_time(pid) not in (None, recorded)


# A lock file that cannot be read is taken for one being written only while it is this young.
_UNREADABLE_LOCK_GRACE_SECONDS = 3.0
# A lock whose heartbeat is older than this is taken over, from any host and any job. A
# healthy run rewrites its heartbeat at least every HEARTBEAT_EVERY_SECONDS, except while
# one stretch of work lasts longer: start-up (restoring a checkpoint, opening the data,
# building a small dataset once, compiling the steps) or one step with its hooks (an
# evaluation of ImageNet's 50,000 validation images, population statistics, a checkpoint
# write), a few minutes at most on the slowest accelerator bn_repro supports. 30 minutes
# is well above that; BN_REPRO_LOCK_STALE_MINUTES sets another limit.
LOCK_STALE_AFTER_MINUTES = 30.0
# The heartbeat is rewritten at most this often (one small write; gs://: one object upload).
HEARTBEAT_EVERY_SECONDS = 60.0


def lock_stale_after_seconds() -> float:
  """LOCK_STALE_AFTER_MINUTES, or BN_REPRO_LOCK_STALE_MINUTES when set, in seconds."""
  text = os.environ.get('BN_REPRO_LOCK_STALE_MINUTES')
  if not text:
    return LOCK_STALE_AFTER_MINUTES * 60
  try:
    minutes = float(text)
  except ValueError:
    minutes = -1
  if not minutes > 0:
    raise UserError(f'BN_REPRO_LOCK_STALE_MINUTES={text!r} must be a number of minutes > 0')
  return minutes * 60


def run_identity() -> dict:
  """What this process belongs to, as the lock records it: {'job': ...} of the launcher
  (BN_REPRO_RUN_ID, which scripts/tpu_vm_train.sh sets from the TPU's name and the workdir,
  else the Slurm job: an array task is <array job>_<task>, as squeue shows it), with
  'restart' (SLURM_RESTART_COUNT: how often Slurm requeued the job) for Slurm; {} outside."""
  if os.environ.get('BN_REPRO_RUN_ID'):
    return {'job': f'run {os.environ["BN_REPRO_RUN_ID"]}'}
  if not os.environ.get('SLURM_JOB_ID'):
    return {}
  array, task = os.environ.get('SLURM_ARRAY_JOB_ID'), os.environ.get('SLURM_ARRAY_TASK_ID')
  job = f'{array}_{task}' if array and task else os.environ['SLURM_JOB_ID']
  return {'job': f'Slurm job {job}', 'restart': _count(os.environ.get('SLURM_RESTART_COUNT'))}


def _count(value) -> int:
  try:
    return int(value or 0)
  except (TypeError, ValueError):
    return 0


def _now() -> datetime.datetime:
  return datetime.datetime.now().astimezone()


def _timestamp() -> str:
  return _now().isoformat(timespec='seconds')


def _heartbeat_age(holder: dict) -> float | None:
  """Seconds since the holder's last heartbeat, None if it has none (an older lock)."""
  try:
    beat = datetime.datetime.fromisoformat(holder['heartbeat'])
  except (KeyError, TypeError, ValueError):
    return None
  return (_now() - (beat if beat.tzinfo else beat.astimezone())).total_seconds()


def _minutes(seconds: float) -> str:
  return f'{seconds / 60:.0f} min' if seconds >= 60 else f'{seconds:.0f} s'


def _takeover_reason(holder: dict, owner: dict, stale_after: float) -> str | None:
  """Why the holder's lock can be taken over by `owner` (in words), None if it cannot."""
  if holder.get('host') == owner['host']:
    if _process_gone(holder):
      return f'its process {holder.get("pid")} on this host is gone'
  elif holder.get('job') and holder.get('job') == owner.get('job'):
    if 'restart' not in owner:
      return f'it was left on {holder.get("host")} by this same {owner["job"]}, started again'
    if owner['restart'] > _count(holder.get('restart')):
      return (f'it was left on {holder.get("host")} by this same {owner["job"]} before Slurm '
              f'requeued it (restart {_count(holder.get("restart"))} -> {owner["restart"]})')
  age = _heartbeat_age(holder)
  if age is not None and age > stale_after:
    return f'its last heartbeat is {_minutes(age)} old (more than {_minutes(stale_after)})'
  return None


def _describe(holder: dict) -> str:
  age = _heartbeat_age(holder)
  return (f'process {holder.get("pid", "?")} on {holder.get("host", "?")} '
          f'({holder.get("job") or "no Slurm job or run id"}) since {holder.get("since", "?")}, '
          f'last heartbeat {holder.get("heartbeat", "none")}'
          + (f' ({_minutes(max(age, 0))} ago)' if age is not None else ''))


def _parse_lock(text: str, *, strict: bool = False) -> dict | None:
  """The record of a lock file; if it is not one, None (strict: a ValueError saying why)."""
  try:
    holder = json.loads(text)
    if not isinstance(holder, dict):
      raise ValueError('not a JSON object')
    int(holder.get('pid', -1))
    return holder
  except (ValueError, TypeError) as e:
    if strict:
      raise ValueError(str(e)) from e
    return None


class LockLost(UserError):
  """Another run took over the lock of the workdir this run trains in."""


@dataclasses.dataclass
class _HeldLock:
  path: str
  text: str            # what this process last wrote there
  version: object      # its version (files.read_versioned)
  written: float       # when (time.monotonic)


class Workdir:
  """The files of one run's workdir (see the module docstring)."""

  def __init__(self, path: str):
    self.path = files.absolute(path)
    self._held = None   # the lock, while this process holds it

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
    """Held while a training run works here (process 0 takes it); another run is refused in
    one line. <workdir>/.lock records the holder: pid, host, process start time, its job
    (run_identity), since, and a heartbeat that heartbeat() rewrites while it trains. Taken
    over, with a warning saying why: a lock of a dead process on this host (a reused PID
    does not count); one left on another host by this same run (BN_REPRO_RUN_ID) or Slurm
    job since requeued; one whose heartbeat is older than lock_stale_after_seconds(); one
    that cannot be read (written half by a crash) after a grace. Taking it is one atomic
    create, taking it over one atomic replace of the version read (gs://: generation
    preconditions), so of two runs starting at once one wins."""
    if device_map.process_index() != 0:
      yield
      return
    path = self.file(LOCK_FILE)
    since = _timestamp()
    owner = {'pid': os.getpid(), 'host': socket.gethostname(),
             'process_start': process_start_time(os.getpid()), **run_identity(),
             'since': since, 'heartbeat': since, 'token': uuid.uuid4().hex}
    text = json.dumps(owner)
    version = self._acquire(path, owner, text)
    self._held = _HeldLock(path, text, version, time.monotonic())
    try:
      yield
    finally:
      held, self._held = self._held, None
      files.remove_if_unchanged(path, held.version)   # not the lock of a run that took over

  def _acquire(self, path: str, owner: dict, text: str):
    """Takes the lock (see lock()); its version."""
    stale_after = lock_stale_after_seconds()
    first_unreadable = None
    while True:
      version = files.create_exclusive(path, text)
      if version is not None:
        return version
      try:
        current, version = files.read_versioned(path)
      except FileNotFoundError:
        continue             # released meanwhile: try again
      if current == text:    # our create, whose answer was lost and retried
        return version
      try:
        holder = _parse_lock(current, strict=True)
      except ValueError as e:
        # Maybe another run created it a moment ago and is writing it: wait that long.
        first_unreadable = first_unreadable or time.monotonic()
        if time.monotonic() - first_unreadable < _UNREADABLE_LOCK_GRACE_SECONDS:
          time.sleep(0.5)
          continue
        reason = f'it cannot be read ({e})'
      else:
        reason = _takeover_reason(holder, owner, stale_after)
        if reason is None:
          raise UserError(
              f'{self.path} is in use by {_describe(holder)}: wait for it to finish or use '
              f'another --workdir; if that run is gone, delete {path} (it is also taken '
              f'over once its heartbeat is {_minutes(stale_after)} old)')
      taken = files.replace_if_unchanged(path, text, version)
      if taken is not None:
        logging.warning('%s: %s: taking it over (it held %s)', path, reason,
                        current.strip()[:300] or 'nothing')
        return taken
      # Changed since it was read, or another run is replacing it: look again.
      time.sleep(0.05)

  def heartbeat(self) -> None:
    """Rewrites the heartbeat of the lock this process holds, at most every
    HEARTBEAT_EVERY_SECONDS (a no-op without the lock: other processes). Raises LockLost if
    another run took the lock over: this one then stops, so that only one trains here."""
    held = self._held
    if held is None or time.monotonic() - held.written < HEARTBEAT_EVERY_SECONDS:
      return
    text = json.dumps(dict(json.loads(held.text), heartbeat=_timestamp()))
    version = files.rewrite_if_unchanged(held.path, text, held.version)
    if version is None:
      try:
        current, version = files.read_versioned(held.path)
      except FileNotFoundError:
        current = None
      if current != text:    # not our own write (answered late and retried)
        holder = _parse_lock(current) if current is not None else None
        holder = _describe(holder) if holder else 'the lock file is gone or unreadable'
        raise LockLost(f'{self.path}: another run took over the lock ({holder}); this run '
                       'stops so that only one trains there')
    self._held = _HeldLock(held.path, text, version, time.monotonic())


def _step_of(line: str) -> int | None:
  try:
    return int(json.loads(line)['step'])
  except (ValueError, KeyError, TypeError):
    return None
