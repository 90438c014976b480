"""Reproduces the paper's claims at small scale on Fashion-MNIST (or MNIST) and writes results/.

  python scripts/reproduce.py --quick      # every piece at toy length
  python scripts/reproduce.py              # the full mode (README: its wall time)

Every step is a command line of the project's own scripts, run in a
subprocess and listed in <out>/commands.md; re-running skips finished runs
and resumes interrupted ones. Outputs: plots (PNG), tables (Markdown and
JSON), the machine, the wall time and the git commit.
"""

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import ml_collections  # noqa: E402

from bn_repro.data import datasets  # noqa: E402
from bn_repro.errors import DataError  # noqa: E402
from bn_repro.research import ics_probe, plots  # noqa: E402
from bn_repro.research import reproduce as rp  # noqa: E402
from bn_repro.workdir import Workdir, write_json  # noqa: E402


class Runner:
  """Runs and records the commands of one reproduction."""

  def __init__(self, out_dir: str, data_args: list[str]):
    self.out_dir = out_dir
    self.data_args = data_args
    self.commands = []
    self.timings = {}

  def command(self, name: str, script: str, *args: str, data: bool = True,
              skip: bool = False) -> None:
    """Runs and records a command; skip: only record it (its run finished earlier)."""
    command = [sys.executable, script, *args] + (self.data_args if data else [])
    self.commands.append((name, ' '.join(['python'] + command[1:])))
    if skip:
      self.timings[name] = 'finished by an earlier invocation'
      return
    log = rp.results_path(self.out_dir, 'logs', f'{rp.slug(name)}.log')
    start = time.time()
    print(f'[{datetime.datetime.now():%H:%M:%S}] {name}', flush=True)
    with open(log, 'w', encoding='utf-8') as f:
      status = subprocess.run(command, cwd=REPO, stdout=f, stderr=subprocess.STDOUT).returncode
    self.timings[name] = round(time.time() - start, 1)
    if status != 0:
      raise SystemExit(f'{name} failed (exit {status}); see {log}')

  def workdir(self, name: str) -> str:
    return os.path.join(self.out_dir, 'runs', rp.slug(name))


def done(workdir: str, step: int) -> bool:
  results = Workdir(workdir).read_results()
  return results is not None and results['step'] >= step


def figure1(runner: Runner, plan: rp.Plan, dataset: str) -> dict:
  curves, records = {}, {}
  for label, batch_norm in (('without BN', False), ('with BN', True)):
    workdir = runner.workdir(f'mlp {label}')
    runner.command(f'Figure 1 MLP {label}', *rp.mlp_command(plan, dataset, batch_norm, workdir),
                   skip=done(workdir, plan.mlp_steps))
    curves[label] = rp.eval_curve(workdir)
    records[label] = ics_probe.read_records(Workdir(workdir))
  plots.save(plots.accuracy_curves(curves, title=f'Figure 1(a): 3x100 sigmoid MLP on {dataset}'),
             rp.results_path(runner.out_dir, 'figure1a_accuracy.png'))
  plots.save(plots.percentile_bands(
      [(records['without BN'], 'hidden3', 'Figure 1(b): without BN'),
       (records['with BN'], 'hidden3', 'Figure 1(c): with BN')]),
      rp.results_path(runner.out_dir, 'figure1bc_percentiles.png'))
  return {label: {'final_top1': c[1][-1], 'best_top1': max(c[1]), 'steps': c[0][-1]}
          for label, c in curves.items()}


def figures2_3(runner: Runner, plan: rp.Plan, dataset: str) -> tuple[list[dict], dict]:
  curves, learning_rates = {}, {}
  for name in rp.TWINS:
    workdir = runner.workdir(name)
    runner.command(name, *rp.twin_command(plan, dataset, name, workdir),
                   skip=done(workdir, plan.twin_steps))
    config_used = Workdir(workdir).load_config()
    learning_rates[name] = config_used.optimizer.learning_rate * config_used.optimizer.lr_scale
    curves[name] = {'ema': rp.eval_curve(workdir)}
    population = rp.eval_curve(workdir, 'eval_population_top1')
    if population[0]:
      curves[name]['population'] = population
  plots.save(plots.accuracy_curves(
      {n: c['ema'] for n, c in curves.items()},
      title=f'Figure 2 at small scale ({dataset}), EMA BN statistics'),
      rp.results_path(runner.out_dir, 'figure2_accuracy_ema.png'))
  plots.save(plots.accuracy_curves(
      {n: c.get('population', c['ema']) for n, c in curves.items()},
      title=f'Figure 2 at small scale ({dataset}), population BN statistics (no-BN runs: as is)'),
      rp.results_path(runner.out_dir, 'figure2_accuracy_population.png'))
  records = {n: ics_probe.read_records(Workdir(runner.workdir(n))) for n in rp.PROBE_TWINS}
  for layer in rp.PROBE_LAYERS:
    plots.save(plots.percentile_bands([(records[n], layer, f'{n}: {layer}') for n in rp.PROBE_TWINS]),
               rp.results_path(runner.out_dir, f'ics_{rp.slug(layer)}_percentiles.png'))
    plots.save(plots.drift_curves(records, layer),
               rp.results_path(runner.out_dir, f'ics_{rp.slug(layer)}_drift.png'))
  return rp.figure3_rows(curves, 'Inception'), learning_rates


def figure4(runner: Runner, plan: rp.Plan) -> list[dict]:
  rows = []
  x30 = runner.workdir('BN-x30')
  members = [runner.workdir(n) for n in rp.BN_TWINS]
  for workdir in members:
    runner.command(f'population statistics {os.path.basename(workdir)}',
               'scripts/population_stats.py', '--workdir', workdir,
               f'--num_batches={plan.population_batches}', data=False)
  for crops in plan.crop_modes:
    out = rp.results_path(runner.out_dir, 'eval', f'bn_x30_{crops}crop.json')
    runner.command(f'evaluate BN-x30 {crops} crops', 'scripts/ensemble.py', '--workdirs', x30,
               '--stats', 'population', '--crops', str(crops), '--split', plan.crops_split,
               '--output', out, data=False)
    rows.append(_figure4_row(out, 'BN-x30 twin', crops, 1))
  for crops in plan.ensemble_crops:
    out = rp.results_path(runner.out_dir, 'eval', f'ensemble_{crops}crop.json')
    runner.command(f'ensemble of the BN runs, {crops} crops', 'scripts/ensemble.py', '--workdirs',
               ','.join(members), '--stats', 'population', '--crops', str(crops),
               '--split', plan.crops_split, '--output', out, data=False)
    rows.append(_figure4_row(out, 'ensemble of ' + ', '.join(rp.BN_TWINS), crops, len(members)))
  return rows


def _figure4_row(path: str, model: str, crops: int, models: int) -> dict:
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


def main():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--quick', action='store_true', help='the short mode (~15 min on 2 cores)')
  parser.add_argument('--out', default=None, help='results folder (default results/quick or results/full)')
  parser.add_argument('--dataset', default=None, choices=['fashion_mnist', 'mnist'],
                      help='default: MNIST when it is prepared or its files are given, else Fashion-MNIST')
  parser.add_argument('--data_dir', default=None, help='tfds data_dir')
  args = parser.parse_args()
  plan = rp.QUICK if args.quick else rp.FULL
  mode = 'quick' if args.quick else 'full'
  out_dir = os.path.abspath(args.out or os.path.join(REPO, 'results', mode))
  dataset = args.dataset or _default_dataset(args.data_dir)
  data_args = [f'--config.data.data_dir={args.data_dir}'] if args.data_dir else []
  runner = Runner(out_dir, data_args)
  start = time.time()
  commit = git_commit()  # the code the runs start from
  print(f'Reproducing at small scale ({mode} mode) on {dataset}; results in {out_dir}')

  summary = {'mode': mode, 'dataset': dataset, 'plan': rp.dataclasses.asdict(plan)}
  summary['figure1'] = figure1(runner, plan, dataset)
  rows3, learning_rates = figures2_3(runner, plan, dataset)
  summary['figure3'] = rows3
  summary['figure4'] = rows4 = figure4(runner, plan)
  wall = time.time() - start
  summary['machine'] = {'platform': platform.platform(), 'python': platform.python_version(),
                        'cpus': os.cpu_count(), 'processor': platform.processor()}
  summary['git_commit'] = commit
  summary['wall_seconds'] = round(wall, 1)
  summary['step_seconds'] = runner.timings
  write_json(rp.results_path(out_dir, 'summary.json'), summary)

  with open(rp.results_path(out_dir, 'commands.md'), 'w', encoding='utf-8') as f:
    f.write('# Commands, in order\n\n')
    for name, command in runner.commands:
      timing = runner.timings[name]
      timing = f'{timing} s' if isinstance(timing, float) else timing
      f.write(f'- {name} ({timing}):\n  `{command}`\n')
  with open(rp.results_path(out_dir, 'tables.md'), 'w', encoding='utf-8') as f:
    f.write(f'# Results ({mode} mode, {dataset})\n\n')
    f.write(f'Machine: {summary["machine"]["platform"]}, {os.cpu_count()} CPUs. '
            f'Commit {summary["git_commit"]}. Wall time {wall / 60:.1f} min.\n\n')
    f.write('## Figure 1: the 3x100 sigmoid MLP\n\n| run | best test top-1 | final test top-1 | steps |\n|---|---|---|---|\n')
    for label, v in summary['figure1'].items():
      f.write(f'| {label} | {v["best_top1"]:.4f} | {v["final_top1"]:.4f} | {v["steps"]} |\n')
    f.write('\n![Figure 1(a)](figure1a_accuracy.png)\n![Figure 1(b,c)](figure1bc_percentiles.png)\n')
    f.write('\n## Figures 2 and 3: the five paper models and two controls (twins)\n\n')
    f.write(rp.figure3_markdown(rows3, learning_rates) + '\n')
    f.write('\n![Figure 2 (EMA)](figure2_accuracy_ema.png)\n'
            '![Figure 2 (population)](figure2_accuracy_population.png)\n')
    f.write('\n## Figure 4 in spirit: crops and an ensemble (population statistics)\n\n')
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
