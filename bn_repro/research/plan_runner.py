"""A whole reproduction: trains every run of the plan (skipping finished ones, resuming
interrupted ones), runs the Figure 4 evaluations, draws the figures and writes the report."""

from __future__ import annotations

import os
import time

import ml_collections

from bn_repro.data import datasets
from bn_repro.errors import DataError
from bn_repro.research import figures, report
from bn_repro.research import reproduce as rp
from bn_repro.research.command_runner import Runner, git_commit
from bn_repro.research.figure4 import figure4
from bn_repro.workdir import Workdir


def reproduce(repo: str, *, quick: bool = False, out: str | None = None,
              dataset: str | None = None, data_dir: str | None = None,
              tables_only: bool = False) -> None:
  """The reproduction from the repository root `repo` (where the scripts it runs are).

  out: the results folder (default <repo>/results/quick or full); dataset: default MNIST
  when it is prepared, else Fashion-MNIST; tables_only: run nothing, only the tables and
  plots of the runs finished so far."""
  plan = rp.QUICK if quick else rp.FULL
  mode = 'quick' if quick else 'full'
  out_dir = os.path.abspath(out or os.path.join(repo, 'results', mode))
  dataset = dataset or default_dataset(data_dir)
  data_args = [f'--config.data.data_dir={data_dir}'] if data_dir else []
  runner = Runner(out_dir, data_args, repo, dry=tables_only)
  start = time.time()
  commit = git_commit(repo)  # the code the runs start from
  print(f'Reproducing at small scale ({mode} mode) on {dataset}; results in {out_dir}')

  finished = train_all(runner, plan, dataset)
  rows1, target1 = figures.figure1(out_dir, plan, finished, dataset)
  rows3, learning_rates, target = figures.figures2_3(out_dir, plan, finished, dataset)
  batch_rows = figures.bn_batch(out_dir, plan, finished, target)
  long_rows = figures.longer(out_dir, finished, target)
  rows4 = figure4(runner, plan, finished)
  findings = report.Findings(rows1, target1, rows3, target, learning_rates, batch_rows,
                             long_rows, rows4)
  wall = time.time() - start
  invocation = report.Invocation(mode, dataset, plan, commit, wall, [r.slug for r in finished])
  report.write(out_dir, runner, invocation, findings)
  print(f'Done in {wall / 60:.1f} min: {out_dir}/{report.TABLES_FILE}')


def done(workdir: str, step: int) -> bool:
  """Whether the run in `workdir` has its final results at `step` or later."""
  results = Workdir(workdir).read_results() if os.path.isdir(workdir) else None
  return results is not None and results['step'] >= step


def train_all(runner: Runner, plan: rp.Plan, dataset: str) -> dict[rp.Run, str]:
  """Trains every run of the plan (skipping finished ones); {run: workdir} of finished runs."""
  finished = {}
  for run in rp.plan_runs(plan):
    workdir = runner.workdir(run)
    steps = rp.run_steps(run, plan)
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
