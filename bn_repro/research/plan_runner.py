"""A whole reproduction: trains every run of the plan (skipping finished ones, resuming
interrupted ones), runs the Figure 4 evaluations, draws the figures and writes the report;
or, with parts, the named parts of bn_repro/research/parts.py and their report.

Each run's code identity is appended to its workdir when it starts or resumes
(bn_repro/research/code_identity.py); a report that would pool runs of different
code is refused unless allow_mixed_code."""

from __future__ import annotations

import os
import time

import ml_collections

from bn_repro.data import datasets
from bn_repro.errors import DataError
from bn_repro.research import code_identity, figures, parts_report, report
from bn_repro.research import parts as pt
from bn_repro.research import reproduce as rp
from bn_repro.research.command_runner import Runner, git_commit
from bn_repro.research.figure4 import figure4
from bn_repro.workdir import Workdir


def reproduce(repo: str, *, quick: bool = False, out: str | None = None,
              dataset: str | None = None, data_dir: str | None = None,
              tables_only: bool = False, allow_mixed_code: bool = False) -> None:
  """The reproduction from the repository root `repo` (where the scripts it runs are).

  out: the results folder (default <repo>/results/quick or full); dataset: default MNIST
  when it is prepared, else Fashion-MNIST; tables_only: run nothing, only the tables and
  plots of the runs finished so far; allow_mixed_code: make the tables even if the
  finished runs differ in code identity (flagged in tables.md)."""
  plan = rp.QUICK if quick else rp.FULL
  mode = 'quick' if quick else 'full'
  out_dir = os.path.abspath(out or os.path.join(repo, 'results', mode))
  dataset = dataset or default_dataset(data_dir)
  data_args = [f'--config.data.data_dir={data_dir}'] if data_dir else []
  runner = Runner(out_dir, data_args, repo, dry=tables_only)
  start = time.time()
  commit = git_commit(repo)  # the code the runs start from
  print(f'Reproducing at small scale ({mode} mode) on {dataset}; results in {out_dir}')

  finished = train_all(runner, plan, dataset, code_identity.current(repo))
  check = code_identity.check_pool({r.slug: w for r, w in finished.items()})
  if not check.ok and not allow_mixed_code:
    raise SystemExit(f'refusing to pool the runs in one report: {check.note}; re-run them at '
                     'one code, or pass --allow_mixed_code to make the tables anyway (flagged)')
  rows1, target1 = figures.figure1(out_dir, plan, finished, dataset)
  rows3, learning_rates, target = figures.figures2_3(out_dir, plan, finished, dataset)
  batch_rows = figures.bn_batch(out_dir, plan, finished, target)
  long_rows = figures.longer(out_dir, finished, target)
  rows4 = figure4(runner, plan, finished)
  findings = report.Findings(rows1, target1, rows3, target, learning_rates, batch_rows,
                             long_rows, rows4)
  wall = time.time() - start
  invocation = report.Invocation(mode, dataset, plan, commit, wall, [r.slug for r in finished],
                                 ('FLAGGED, pools runs of different code: ' if not check.ok
                                  else '') + check.note)
  report.write(out_dir, runner, invocation, findings)
  print(f'Done in {wall / 60:.1f} min: {out_dir}/{report.TABLES_FILE}')


def reproduce_parts(repo: str, parts: tuple[str, ...], *, quick: bool = False,
                    out: str | None = None, dataset: str | None = None,
                    data_dir: str | None = None, tables_only: bool = False,
                    seeds: tuple[int, ...] | None = None, reference: str | None = None,
                    allow_mixed_code: bool = False) -> None:
  """Trains the named parts (bn_repro/research/parts.py) not finished yet, in priority
  order, and writes their report from every finished run of every part.

  out: default <repo>/results/controls (quick: results/controls_quick); seeds: train only
  these seeds this time; reference: the main plan's results folder the same-code check and
  the corrections read (default results/full, quick: results/quick)."""
  plan = pt.QUICK if quick else pt.FULL
  mode = 'quick' if quick else 'full'
  out_dir = os.path.abspath(out or os.path.join(repo, 'results',
                                                'controls_quick' if quick else 'controls'))
  reference = os.path.abspath(reference or os.path.join(repo, 'results', mode))
  dataset = dataset or default_dataset(data_dir)
  data_args = [f'--config.data.data_dir={data_dir}'] if data_dir else []
  runner = Runner(out_dir, data_args, repo, dry=tables_only)
  identity = code_identity.current(repo)
  print(f'Parts {", ".join(parts)} ({mode} mode) on {dataset}; results in {out_dir}')
  pt.train_parts(runner, parts, plan, dataset, identity, seeds)
  # The report covers every part's finished runs, whichever parts ran this time.
  finished = pt.train_parts(Runner(out_dir, data_args, repo, dry=True), pt.PARTS, plan,
                            dataset, identity)
  refused = parts_report.write(out_dir, mode=mode, dataset=dataset, plan=plan, parts=parts,
                               finished=finished, reference=reference, identity=identity,
                               commands=runner.commands, allow_mixed_code=allow_mixed_code)
  report.write_commands(out_dir, runner)
  print(f'Report: {out_dir}/{parts_report.TABLES_FILE}')
  if refused:
    raise SystemExit(f'refused sections (runs of different code): {"; ".join(refused)}; '
                     'pass --allow_mixed_code to make them anyway (flagged)')


def done(workdir: str, step: int) -> bool:
  """Whether the run in `workdir` has its final results at `step` or later."""
  results = Workdir(workdir).read_results() if os.path.isdir(workdir) else None
  return results is not None and results['step'] >= step


def train_all(runner: Runner, plan: rp.Plan, dataset: str,
              identity: dict) -> dict[rp.Run, str]:
  """Trains every run of the plan (skipping finished ones), recording each start's code
  identity in its workdir; {run: workdir} of finished runs."""
  finished = {}
  for run in rp.plan_runs(plan):
    workdir = runner.workdir(run)
    steps = rp.run_steps(run, plan)
    if not done(workdir, steps) and not runner.dry:
      code_identity.record_start(workdir, identity, code_identity.last_step(workdir))
    runner.command(f'{run.label}, seed {run.seed}', *rp.command(run, plan, dataset, workdir),
                   skip=done(workdir, steps))
    if done(workdir, steps):
      finished[run] = workdir
  return finished


def default_dataset(data_dir: str | None) -> str:
  """MNIST when it is prepared (or its files are given), else Fashion-MNIST."""
  try:
    datasets.get_builder(ml_collections.ConfigDict(dict(
        dataset='mnist', data_dir=data_dir, local_dir=None, download=False, manual_dir=None)))
    return 'mnist'
  except DataError:
    return 'fashion_mnist'
