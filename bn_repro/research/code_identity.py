"""The code a run was trained by: recorded in its workdir at every start and resume, and
checked before a table pools runs.

A run's code identity is the hash of the sources that decide what is trained
(bn_repro/ except research/, which only runs and reports; configs/; the
training scripts) and the versions of the libraries the numbers depend on.
The commit and the dirty flag are recorded too, but two runs of the same
sources at different commits (a documentation commit in between) pool. So is
the host's CPU: runs of one code on different CPUs pool, flagged, since XLA's
CPU numerics differ between CPUs (docs/controls.md measures by how much).
"""

from __future__ import annotations

import dataclasses
import datetime
import glob
import hashlib
import importlib.metadata
import json
import os
import platform
import subprocess

from bn_repro import host
from bn_repro.workdir import Workdir

RECORD_FILE = 'code_identity.jsonl'   # in the run's workdir, one line per start
# {library: its distributions, first found wins} (TensorFlow ships under several names).
LIBRARIES = {'jax': ('jax',), 'jaxlib': ('jaxlib',), 'flax': ('flax',), 'optax': ('optax',),
             'tensorflow': ('tensorflow', 'tensorflow-cpu', 'tensorflow_cpu'),
             'numpy': ('numpy',)}
# Sources outside the hash: they run and report the runs, they do not train them.
NOT_TRAINING = ('bn_repro/research/', 'scripts/reproduce.py')


def source_files(repo: str) -> list[str]:
  """The hashed sources, relative to `repo`, sorted."""
  found = []
  for pattern in ('bn_repro/**/*.py', 'configs/*.py', 'scripts/*.py'):
    found += [os.path.relpath(p, repo) for p in glob.glob(os.path.join(repo, pattern),
                                                            recursive=True)]
  return sorted(p for p in found if not p.startswith(NOT_TRAINING))


def code_hash(repo: str) -> str:
  """sha256 over the hashed sources' paths and contents (first 16 hex digits)."""
  digest = hashlib.sha256()
  for path in source_files(repo):
    digest.update(path.encode() + b'\0')
    with open(os.path.join(repo, path), 'rb') as f:
      digest.update(f.read() + b'\0')
  return digest.hexdigest()[:16]


def versions() -> dict[str, str]:
  out = {'python': platform.python_version()}
  for name, distributions in LIBRARIES.items():
    out[name] = 'absent'
    for distribution in distributions:
      try:
        out[name] = importlib.metadata.version(distribution)
        break
      except importlib.metadata.PackageNotFoundError:
        continue
  return out


def _git(repo: str, *args: str) -> str | None:
  try:
    return subprocess.run(['git', *args], cwd=repo, capture_output=True, text=True,
                          check=True).stdout.strip()
  except (OSError, subprocess.CalledProcessError):
    return None


def current(repo: str) -> dict:
  """The identity of the code in `repo` now."""
  changes = _git(repo, 'status', '--porcelain', '--untracked-files=no', '--', 'bn_repro',
                 'configs', 'scripts')
  return {'commit': _git(repo, 'rev-parse', 'HEAD') or 'unknown',
          'dirty': bool(changes) if changes is not None else None,
          'code_hash': code_hash(repo), 'versions': versions(),
          'host': {'cpu': host.cpu_model(), 'machine': platform.machine()}}


def key(identity: dict) -> str:
  """What must agree for two runs to pool: the hashed sources and the library versions."""
  return json.dumps({'code_hash': identity['code_hash'], 'versions': identity['versions']},
                    sort_keys=True)


def record_start(workdir: str, identity: dict, start_step: int) -> None:
  """Appends one start (or resume, at `start_step`) of the run in `workdir`."""
  os.makedirs(workdir, exist_ok=True)
  line = {'time': datetime.datetime.now().isoformat(timespec='seconds'),
          'start_step': start_step, **identity}
  with open(os.path.join(workdir, RECORD_FILE), 'a', encoding='utf-8') as f:
    f.write(json.dumps(line, sort_keys=True) + '\n')


def read(workdir: str) -> list[dict]:
  path = os.path.join(workdir, RECORD_FILE)
  if not os.path.exists(path):
    return []
  with open(path, encoding='utf-8') as f:
    return [json.loads(line) for line in f if line.strip()]


def last_step(workdir: str) -> int:
  """The last step the run's metrics reached (where a resume starts, near enough)."""
  if not os.path.exists(Workdir(workdir).metrics_file):
    return 0
  return max((r['step'] for r in Workdir(workdir).read_metrics()), default=0)


@dataclasses.dataclass(frozen=True)
class RunIdentity:
  """What a run's records say: its code (None: never recorded), whether it was resumed
  under other code than it started with, and the CPUs it ran on (empty: not recorded)."""
  key: str | None
  commit: str
  mixed: bool
  cpus: tuple[str, ...] = ()

  @property
  def label(self) -> str:
    if self.key is None:
      return 'not recorded'
    code = json.loads(self.key)
    return f'{self.commit[:7]} (code {code["code_hash"][:8]})' + (
        ', RESUMED UNDER OTHER CODE' if self.mixed else '')


def of_run(workdir: str) -> RunIdentity:
  records = read(workdir)
  if not records:
    return RunIdentity(None, 'unknown', False)
  keys = {key(r) for r in records}
  cpus = tuple(sorted({r['host']['cpu'] for r in records if 'host' in r}))
  return RunIdentity(key(records[-1]), records[-1]['commit'], len(keys) > 1, cpus)


@dataclasses.dataclass(frozen=True)
class PoolCheck:
  """Whether a table's runs share one code identity, and the sentence saying so."""
  ok: bool
  note: str


def check_pool(runs: dict[str, str]) -> PoolCheck:
  """runs: {label: workdir} of one table. Not ok when two recorded runs have different code
  or one run was resumed under other code; runs without records are named, not refused,
  and so are runs of one code on different CPUs."""
  identities = {label: of_run(w) for label, w in runs.items()}
  recorded = {label: i for label, i in identities.items() if i.key is not None}
  keys = {i.key for i in recorded.values()}
  mixed = sorted(label for label, i in recorded.items() if i.mixed)
  unrecorded = sorted(set(identities) - set(recorded))
  notes = []
  if len(keys) > 1:
    notes.append('runs of different code: ' + '; '.join(
        f'{label}: {i.label}' for label, i in sorted(recorded.items())))
  if mixed:
    notes.append('resumed under other code than they started with: ' + ', '.join(mixed))
  cpus = sorted({cpu for i in recorded.values() for cpu in i.cpus})
  without_cpu = sorted(label for label, i in recorded.items() if not i.cpus)
  if len(cpus) > 1:
    notes.append('pooled across CPUs (same code; XLA\'s CPU numerics differ between them): '
                 + '; '.join(f'{label}: {", ".join(i.cpus) or "not recorded"}'
                             for label, i in sorted(recorded.items())))
  elif cpus and without_cpu:
    notes.append(f'may be pooled across CPUs: the others ran on {cpus[0]}, these have no CPU '
                 'record: ' + ', '.join(without_cpu))
  if unrecorded:
    notes.append(f'{len(unrecorded)} run(s) without a code record (made before records '
                 'existed): ' + ', '.join(unrecorded))
  return PoolCheck(len(keys) <= 1 and not mixed, '; '.join(notes))
