"""Reproduces the paper's claims at small scale on Fashion-MNIST (or MNIST) and writes results/.

  python scripts/reproduce.py --quick      # every piece at toy length
  python scripts/reproduce.py              # the full mode (README: its wall time)

Every step is a command line of the project's own scripts, run in a
subprocess and listed in <out>/commands.md; re-running skips finished runs
and resumes interrupted ones, and `--tables_only` rewrites the tables and plots
from the runs finished so far. Outputs: plots (PNG), tables (Markdown and
JSON), the machine, the wall time and the git commit.
"""

import argparse
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import ml_collections  # noqa: E402

from bn_repro.data import datasets  # noqa: E402
from bn_repro.errors import DataError  # noqa: E402
from bn_repro.evaluation import ics_probe  # noqa: E402
from bn_repro.research import plots  # noqa: E402
from bn_repro.research import reproduce as rp  # noqa: E402
from bn_repro.workdir import Workdir, write_json_on_process_0  # noqa: E402


class Runner:
  """Runs and records the commands of one reproduction."""

  def __init__(self, out_dir: str, data_args: list[str], *, dry: bool = False):
    self.out_dir = out_dir
    self.data_args = data_args
    self.dry = dry           # only record the commands (the tables come from earlier runs)
    self.commands = []
    self.timings = {}

  def command(self, name: str, script: str, *args: str, data: bool = True,
              skip: bool = False) -> None:
    """Runs and records a command; skip: only record it (its run finished earlier)."""
    command = [sys.executable, script, *args] + (self.data_args if data else [])
    # As typed in the repository root (where it runs): quoted, paths relative.
    shown = [arg.replace(REPO + os.sep, '') for arg in command[1:]]
    self.commands.append((name, shlex.join(['python'] + shown)))
    if skip or self.dry:
      self.timings[name] = 'finished by an earlier invocation' if skip else 'not run'
      return
    log = rp.results_path(self.out_dir, 'logs', f'{rp.slug(name)}.log')
    start = time.time()
    print(f'[{datetime.datetime.now():%H:%M:%S}] {name}', flush=True)
    with open(log, 'w', encoding='utf-8') as f:
      status = subprocess.run(command, cwd=REPO, stdout=f, stderr=subprocess.STDOUT).returncode
    self.timings[name] = round(time.time() - start, 1)
    if status != 0:
      raise SystemExit(f'{name} failed (exit {status}); see {log}')

  def workdir(self, run: rp.Run) -> str:
    return os.path.join(self.out_dir, 'runs', run.slug)


def done(workdir: str, step: int) -> bool:
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


def curves_of(workdir: str, metrics) -> dict:
  return {m: rp.eval_curve(workdir, f'{m}_top1') for m in metrics}


def grouped(finished: dict, models, variant: str = '', metrics=tuple(rp.TWIN_EVALS)) -> dict:
  """{model: [per seed: {metric: (steps, top1)}]} of the finished runs of `models`."""
  out = {}
  for model in models:
    seeds = [curves_of(w, metrics) for run, w in sorted(finished.items(), key=lambda i: i[0].seed)
             if run.model == model and run.variant == variant]
    if seeds:
      out[model] = seeds
  return out


def best_mean(curves: list[dict], metric: str = 'eval') -> float:
  return sum(max(c[metric][1]) for c in curves) / len(curves)


def figure1(out_dir: str, finished: dict, dataset: str) -> tuple[list[dict], str]:
  curves = grouped(finished, rp.MLPS, metrics=('eval',))
  if 'MLP without BN' not in curves:
    return [], ''
  target = best_mean(curves['MLP without BN'])
  rows = rp.model_rows(curves, target, metrics=('eval',))
  plots.save(plots.mean_curves({m: [c['eval'] for c in seeds] for m, seeds in curves.items()},
                               title=f'Figure 1(a): 3x100 sigmoid MLP on {dataset}'),
             rp.results_path(out_dir, 'figure1a_accuracy.png'))
  probe_runs = {run.model: w for run, w in finished.items()
                if run.is_mlp and run.seed == min(r.seed for r in finished)}
  if len(probe_runs) == 2:
    records = {m: ics_probe.read_records(Workdir(w)) for m, w in probe_runs.items()}
    plots.save(plots.percentile_bands(
        [(records['MLP without BN'], 'hidden3', 'Figure 1(b): without BN'),
         (records['MLP with BN'], 'hidden3', 'Figure 1(c): with BN')]),
        rp.results_path(out_dir, 'figure1bc_percentiles.png'))
  lines = [f'Target: the MLP without BN\'s best test top-1, {target:.4f} (mean over seeds).',
           '', '| run | seeds | steps to target | best top-1 | final top-1 |',
           '|---|---|---|---|---|']
  for r in rows:
    lines.append(f'| {r["model"]} | {r["seeds"]} | {r["eval"]["steps"].format("{:.0f}")} '
                 f'| {r["eval"]["best"].format()} | {r["eval"]["final"].format()} |')
  return rows, '\n'.join(lines)


def figures2_3(out_dir: str, finished: dict, dataset: str):
  curves = grouped(finished, rp.TWINS)
  if 'Inception' not in curves:
    return [], {}, 0.0
  target = best_mean(curves['Inception'])
  rows = rp.model_rows(curves, target)
  learning_rates = {}
  for run, workdir in finished.items():
    if run.model in rp.TWINS and not run.variant:
      config = Workdir(workdir).load_config()
      learning_rates[run.model] = config.optimizer.learning_rate * config.optimizer.lr_scale
  compared = {m: s for m, s in curves.items() if m in rp.SEEDED_TWINS}
  for metric, label in rp.STATS_LABELS.items():
    plots.save(plots.mean_curves(
        {m: [c[metric] if c[metric][0] else c['eval'] for c in seeds]
         for m, seeds in compared.items()},
        title=f'Figure 2 ({dataset}): BN models with {label} statistics'),
        rp.results_path(out_dir, f'figure2_accuracy_{rp.slug(label)}.png'))
  probe_runs = {run.model: w for run, w in finished.items()
                if run.model in rp.PROBE_TWINS and not run.variant and run.seed == 0}
  if len(probe_runs) == len(rp.PROBE_TWINS):
    records = {m: ics_probe.read_records(Workdir(w)) for m, w in probe_runs.items()}
    for layer in rp.PROBE_LAYERS:
      plots.save(plots.percentile_bands([(records[m], layer, f'{m}: {layer}')
                                         for m in rp.PROBE_TWINS]),
                 rp.results_path(out_dir, f'ics_{rp.slug(layer)}_percentiles.png'))
      plots.save(plots.drift_curves(records, layer),
                 rp.results_path(out_dir, f'ics_{rp.slug(layer)}_drift.png'))
  return rows, learning_rates, target


def bn_batch(out_dir: str, finished: dict, target: float) -> list[dict]:
  """Synced BN (64 examples) against the paper's per-replica BN (32 per device), one seed."""
  seed = min(r.seed for r in finished)
  curves = {}
  for model in rp.PER_REPLICA:
    for variant, label in (('', 'synced, 64'), ('per-replica BN', 'per replica, 32')):
      workdir = next((w for r, w in finished.items()
                      if r.model == model and r.variant == variant and r.seed == seed), None)
      if workdir:
        curves[f'{model}, {label}'] = [curves_of(workdir, rp.TWIN_EVALS)]
  if curves:
    plots.save(plots.mean_curves({m: [c[0]['eval_population']] for m, c in curves.items()},
                                 title='BN statistics over all devices vs per replica '
                                       '(population statistics)'),
               rp.results_path(out_dir, 'bn_batch.png'))
  return rp.model_rows(curves, target)


def longer(out_dir: str, finished: dict, target: float) -> list[dict]:
  curves = {f'{m}, long': s for m, s in grouped(finished, rp.LONG_TWINS, 'long').items()}
  if curves:
    plots.save(plots.mean_curves({m: [s[0]['eval_population']] for m, s in curves.items()},
                                 title='BN-x5 and BN-x30 trained longer (population statistics)'),
               rp.results_path(out_dir, 'longer_training.png'))
  return rp.model_rows(curves, target)


def figure4(runner: Runner, plan: rp.Plan, finished: dict) -> list[dict]:
  """Population statistics of the seed-0 BN twins, multi-crop evaluations of BN-x30,
  and ensembles."""
  seed = plan.seeds[0]
  members = {r.model: w for r, w in finished.items()
             if r.model in rp.BN_TWINS and not r.variant and r.seed == seed}
  x30_seeds = [w for r, w in finished.items() if r.model == 'BN-x30' and not r.variant]
  if len(members) < len(rp.BN_TWINS) or len(x30_seeds) < len(plan.seeds):
    return []
  for workdir in sorted(set(members.values()) | set(x30_seeds)):
    meta = Workdir.population_meta_file(Workdir(workdir).population_dir(plan.twin_steps))
    runner.command(f'population statistics {os.path.basename(workdir)}',
                   'scripts/population_stats.py', '--workdir', workdir,
                   f'--num_batches={plan.population_batches}', data=False,
                   skip=os.path.exists(meta))
  rows = []
  x30 = members['BN-x30']
  for crops in plan.crop_modes:
    out = rp.results_path(runner.out_dir, 'eval', f'bn_x30_{crops}crop.json')
    runner.command(f'evaluate BN-x30 {crops} crops', 'scripts/ensemble.py', '--workdirs', x30,
                   '--statistics', 'population', '--crops', str(crops), '--split', plan.crops_split,
                   '--output', out, data=False, skip=evaluated(out, [x30]))
    rows.append(_figure4_row(out, 'BN-x30 twin', crops, 1))
  ensembles = {'ensemble of ' + ', '.join(rp.BN_TWINS): [members[m] for m in rp.BN_TWINS],
               f'ensemble of BN-x30, {len(x30_seeds)} seeds': sorted(x30_seeds)}
  for label, workdirs in ensembles.items():
    for crops in plan.ensemble_crops:
      out = rp.results_path(runner.out_dir, 'eval', f'{rp.slug(label)}_{crops}crop.json')
      runner.command(f'{label}, {crops} crops', 'scripts/ensemble.py', '--workdirs',
                     ','.join(workdirs), '--statistics', 'population', '--crops', str(crops),
                     '--split', plan.crops_split, '--output', out, data=False,
                     skip=evaluated(out, workdirs))
      rows.append(_figure4_row(out, label, crops, len(workdirs)))
  return [r for r in rows if r]


def evaluated(out: str, workdirs: list[str]) -> bool:
  """Whether `out` holds an evaluation of exactly these runs as they are now: an output
  left from other runs, or from before a member was retrained, is made again."""
  if not os.path.exists(out):
    return False
  with open(out, encoding='utf-8') as f:
    members = [row['workdir'] for row in json.load(f)['rows'] if row['workdir']]
  if sorted(map(os.path.abspath, members)) != sorted(map(os.path.abspath, workdirs)):
    return False
  made = os.path.getmtime(out)
  return all(os.path.getmtime(Workdir(w).results_file) <= made for w in workdirs)


def _figure4_row(path: str, model: str, crops: int, models: int) -> dict | None:
  if not os.path.exists(path):
    return None
  with open(path, encoding='utf-8') as f:
    last = json.load(f)['rows'][-1]
  return {'model': model, 'crops': crops, 'models': models, 'examples': last['examples'],
          'top1_error': last['top1_error'], 'top5_error': last['top5_error']}


def git_commit() -> str:
  try:
    commit = subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=REPO, capture_output=True,
                            text=True, check=True).stdout.strip()
    dirty = subprocess.run(['git', 'status', '--porcelain', '--untracked-files=no'], cwd=REPO,
                           capture_output=True, text=True).stdout.strip()
    return commit + (' (with uncommitted changes)' if dirty else '')
  except (OSError, subprocess.CalledProcessError):
    return 'unknown'


def _serializable(rows):
  return json.loads(json.dumps(rows, default=lambda o: o.__dict__))


def main():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--quick', action='store_true', help='the short mode')
  parser.add_argument('--out', default=None, help='results folder (default results/quick or results/full)')
  parser.add_argument('--dataset', default=None, choices=['fashion_mnist', 'mnist'],
                      help='default: MNIST when it is prepared or its files are given, else Fashion-MNIST')
  parser.add_argument('--data_dir', default=None, help='tfds data_dir')
  parser.add_argument('--tables_only', action='store_true',
                      help='run nothing: tables and plots from the runs finished so far')
  args = parser.parse_args()
  plan = rp.QUICK if args.quick else rp.FULL
  mode = 'quick' if args.quick else 'full'
  out_dir = os.path.abspath(args.out or os.path.join(REPO, 'results', mode))
  dataset = args.dataset or _default_dataset(args.data_dir)
  data_args = [f'--config.data.data_dir={args.data_dir}'] if args.data_dir else []
  runner = Runner(out_dir, data_args, dry=args.tables_only)
  start = time.time()
  commit = git_commit()  # the code the runs start from
  print(f'Reproducing at small scale ({mode} mode) on {dataset}; results in {out_dir}')

  finished = train_all(runner, plan, dataset)
  rows1, table1 = figure1(out_dir, finished, dataset)
  rows3, learning_rates, target = figures2_3(out_dir, finished, dataset)
  bn_rows = [r for r in rows3 if r['model'] in rp.BN_TWINS]
  batch_rows = bn_batch(out_dir, finished, target)
  long_rows = longer(out_dir, finished, target)
  rows4 = figure4(runner, plan, finished)
  wall = time.time() - start
  summary = {'mode': mode, 'dataset': dataset, 'plan': rp.dataclasses.asdict(plan),
             'figure1': _serializable(rows1), 'figure3': _serializable(rows3),
             'target': target, 'bn_batch': _serializable(batch_rows),
             'longer': _serializable(long_rows), 'figure4': rows4,
             'runs_finished': sorted(r.slug for r in finished),
             'machine': {'platform': platform.platform(), 'python': platform.python_version(),
                         'cpus': os.cpu_count(), 'processor': platform.processor()},
             'git_commit': commit, 'wall_seconds_this_invocation': round(wall, 1),
             'step_seconds': runner.timings}
  write_json_on_process_0(rp.results_path(out_dir, 'summary.json'), summary)

  with open(rp.results_path(out_dir, 'commands.md'), 'w', encoding='utf-8') as f:
    f.write('# Commands, in order\n\n')
    for name, command in runner.commands:
      timing = runner.timings[name]
      timing = f'{timing} s' if isinstance(timing, float) else timing
      f.write(f'- {name} ({timing}):\n  `{command}`\n')
  with open(rp.results_path(out_dir, 'tables.md'), 'w', encoding='utf-8') as f:
    f.write(f'# Results ({mode} mode, {dataset})\n\n')
    f.write(f'Machine: {summary["machine"]["platform"]}, {os.cpu_count()} CPUs. Commit '
            f'{commit}. This invocation: {wall / 60:.1f} min. Finished runs: {len(finished)} '
            f'of {len(rp.plan_runs(plan))}.\n\n')
    f.write('## Figure 1: the 3x100 sigmoid MLP\n\n' + table1 + '\n')
    f.write('\n![Figure 1(a)](figure1a_accuracy.png)\n![Figure 1(b,c)](figure1bc_percentiles.png)\n')
    f.write('\n## Figures 2 and 3: the five paper models and two controls (twins)\n\n')
    f.write(rp.figure3_markdown(rows3, target, learning_rates) + '\n\n')
    f.write(''.join(f'![Figure 2, {label}](figure2_accuracy_{rp.slug(label)}.png)\n'
                    for label in rp.STATS_LABELS.values()))
    f.write('\n## BN statistics during training: EMA, debiased EMA, population\n\n')
    f.write(rp.statistics_markdown(bn_rows) + '\n')
    f.write('\n## The BN batch: all devices (64 examples) vs per replica (32), one seed\n\n')
    f.write(rp.simple_rows_markdown(batch_rows, 'run') + '\n\n![BN batch](bn_batch.png)\n')
    f.write(f'\n## Longer training: BN-x5 and BN-x30 for {plan.long_twin_steps} steps, one seed\n\n')
    f.write(rp.simple_rows_markdown(long_rows, 'run') + '\n\n![longer](longer_training.png)\n')
    f.write('\n## Figure 4 in spirit: crops and ensembles (population statistics)\n\n')
    f.write(rp.figure4_markdown(rows4) + '\n')
    f.write('\n## Internal covariate shift probe (Inception vs BN-x5 twins)\n\n')
    for layer in rp.PROBE_LAYERS:
      f.write(f'![{layer}](ics_{rp.slug(layer)}_percentiles.png)\n'
              f'![{layer} drift](ics_{rp.slug(layer)}_drift.png)\n')
  print(f'Done in {wall / 60:.1f} min: {out_dir}/tables.md')


def _default_dataset(data_dir):
  try:
    datasets.get_builder(ml_collections.ConfigDict(dict(
        dataset='mnist', data_dir=data_dir, local_dir=None, download=False, manual_dir=None)))
    return 'mnist'
  except DataError:
    return 'fashion_mnist'


if __name__ == '__main__':
  main()
