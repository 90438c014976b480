"""Runs the reproduction's command lines in subprocesses and records them for commands.md.

Each step is one of the project's own scripts, so that every number in the
report comes from a command a reader can paste into a shell and run again.
"""

from __future__ import annotations

import datetime
import os
import shlex
import subprocess
import sys
import time

from bn_repro.research import reproduce as rp


class Runner:
  """Runs and records the commands of one reproduction, from the repository root `repo`."""

  def __init__(self, out_dir: str, data_args: list[str], repo: str, *, dry: bool = False):
    self.out_dir = out_dir
    self.data_args = data_args
    self.repo = repo
    self.dry = dry           # only record the commands (the tables come from earlier runs)
    self.commands = []
    self.timings = {}

  def command(self, name: str, script: str, *args: str, data: bool = True,
              skip: bool = False, check: bool = True) -> int | None:
    """Runs and records a command; skip: only record it (its run finished earlier).

    Returns the exit status (None when not run); check: a failure stops the reproduction."""
    command = [sys.executable, script, *args] + (self.data_args if data else [])
    # As typed in the repository root (where it runs): quoted, paths relative.
    shown = [arg.replace(self.repo + os.sep, '') for arg in command[1:]]
    self.commands.append((name, shlex.join(['python'] + shown)))
    if skip or self.dry:
      self.timings[name] = 'finished by an earlier invocation' if skip else 'not run'
      return None
    log = self.log(name)
    start = time.time()
    print(f'[{datetime.datetime.now():%H:%M:%S}] {name}', flush=True)
    with open(log, 'w', encoding='utf-8') as f:
      status = subprocess.run(command, cwd=self.repo, stdout=f,
                              stderr=subprocess.STDOUT).returncode
    self.timings[name] = round(time.time() - start, 1)
    if status != 0 and check:
      raise SystemExit(f'{name} failed (exit {status}); see {log}')
    return status

  def log(self, name: str) -> str:
    """The log file of the command `name`."""
    return rp.results_path(self.out_dir, 'logs', f'{rp.slug(name)}.log')

  def workdir(self, run: rp.Run) -> str:
    """The run's workdir, inside the results folder."""
    return os.path.join(self.out_dir, 'runs', run.slug)


def git_commit(repo: str) -> str:
  """The commit the runs start from, marked when the work tree has changes."""
  try:
    commit = subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=repo, capture_output=True,
                            text=True, check=True).stdout.strip()
    dirty = subprocess.run(['git', 'status', '--porcelain', '--untracked-files=no'], cwd=repo,
                           capture_output=True, text=True).stdout.strip()
    return commit + (' (with uncommitted changes)' if dirty else '')
  except (OSError, subprocess.CalledProcessError):
    return 'unknown'
