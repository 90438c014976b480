"""The paper's claims at small scale: the plan of runs, their command lines, and the tables
made from their logs.

bn_repro/research/plan_runner.py runs the plan (each run a recorded command
line of the project's own scripts, in its own workdir) and writes the tables
made here. The compared runs train with several seeds; every number is then
reported as the mean and the range over seeds.
"""

from __future__ import annotations

import dataclasses
import os
import statistics

from bn_repro.workdir import Workdir


@dataclasses.dataclass(frozen=True)
class Plan:
  seeds: tuple[int, ...]          # seeds of the runs the claims are compared on
  mlp_steps: int
  mlp_eval_every: int
  mlp_probe_every: int
  twin_steps: int
  twin_eval_every: int
  twin_probe_every: int
  twin_eval_split: str
  eval_population_batches: int    # population statistics at each evaluation of a twin
  long_twin_steps: int            # BN-x5 and BN-x30 trained longer (one seed)
  long_eval_every: int
  population_batches: int         # population statistics of the final checkpoints
  crops_split: str
  crop_modes: tuple[int, ...]
  ensemble_crops: tuple[int, ...]


# Quick mode: every piece of the full plan at toy length (its wall time on a
# 2-core machine is in the README; most of it is start-up and compilation).
QUICK = Plan(seeds=(0, 1), mlp_steps=1000, mlp_eval_every=250, mlp_probe_every=250,
             twin_steps=100, twin_eval_every=50, twin_probe_every=50,
             twin_eval_split='test[:2000]', eval_population_batches=5, long_twin_steps=200,
             long_eval_every=100, population_batches=10, crops_split='test[:300]',
             crop_modes=(1, 10, 144), ensemble_crops=(1,))
# Full mode, sized for a CPU machine (README: its wall time): the MLP's 50,000
# steps as in the paper, 1.5 epochs (1,406 steps of 64) per twin, 10 epochs for
# the longer runs, and multi-crop and ensemble evaluations on 1,000 test images
# (144 crops cost 144 forward passes per image).
FULL = Plan(seeds=(0, 1, 2), mlp_steps=50_000, mlp_eval_every=1000, mlp_probe_every=500,
            twin_steps=1406, twin_eval_every=176, twin_probe_every=88, twin_eval_split='test',
            eval_population_batches=50, long_twin_steps=9370, long_eval_every=469,
            population_batches=200, crops_split='test[:1000]', crop_modes=(1, 10, 144),
            ensemble_crops=(1,))

# The paper's five models (Figure 3) and two negative controls (section 4.2.2):
# (the model of configs/small_scale.py:MODEL,DATASET, extra flags).
TWINS = {
    'Inception': ('inception', ()),
    'BN-Baseline': ('bn_baseline', ()),
    'BN-x5': ('bn_x5', ()),
    'BN-x30': ('bn_x30', ()),
    'BN-x5-Sigmoid': ('bn_x5_sigmoid', ()),
    'Inception at BN-x5\'s rate': ('inception', ('--config.optimizer.learning_rate=0.0075',)),
    'Inception, sigmoid': ('inception', ('--config.model.activation=sigmoid',)),
}
SEEDED_TWINS = ('Inception', 'BN-Baseline', 'BN-x5', 'BN-x30')
BN_TWINS = ('BN-Baseline', 'BN-x5', 'BN-x30', 'BN-x5-Sigmoid')
PROBE_TWINS = ('Inception', 'BN-x5')
PROBE_LAYERS = ('inception_3a/b1x1', 'inception_5b/b1x1')
PER_REPLICA = {'BN-x5': 'bn_x5_per_replica', 'BN-x30': 'bn_x30_per_replica'}
LONG_TWINS = ('BN-x5', 'BN-x30')
MLPS = {'MLP without BN': 'mlp', 'MLP with BN': 'mlp_bn'}
PAPER_FIGURE3 = {  # the paper's Figure 3: steps to 72.2% and max top-1 on ImageNet
    'Inception': ('31.0e6', '72.2%'), 'BN-Baseline': ('13.3e6', '72.7%'),
    'BN-x5': ('2.1e6', '73.0%'), 'BN-x30': ('2.7e6', '74.8%'),
    'BN-x5-Sigmoid': ('-', '69.8%'),
}
# Training-time evaluations of the BN twins: metric prefix -> BN statistics.
TWIN_EVALS = {'eval': 'ema', 'eval_debiased': 'ema_debiased', 'eval_population': 'population'}
STATS_LABELS = {'eval': 'EMA', 'eval_debiased': 'debiased EMA', 'eval_population': 'population'}


@dataclasses.dataclass(frozen=True)
class Run:
  """One training run of the plan."""
  model: str            # a key of TWINS or MLPS
  seed: int
  variant: str = ''     # '' (the plain twin), 'per-replica BN' or 'long'

  @property
  def label(self) -> str:
    return self.model + (f', {self.variant}' if self.variant else '')

  @property
  def slug(self) -> str:
    return f'{slug(self.label)}_seed{self.seed}'

  @property
  def is_mlp(self) -> bool:
    return self.model in MLPS


def plan_runs(plan: Plan) -> list[Run]:
  """Every training run of a plan, in the order they run: seed by seed, so that a partial
  reproduction already has every compared model at the first seeds."""
  first = plan.seeds[0]
  runs = [Run(model, seed) for seed in plan.seeds for model in MLPS]
  runs += [Run(model, first) for model in TWINS]
  runs += [Run(model, first, 'per-replica BN') for model in PER_REPLICA]
  runs += [Run(model, seed) for seed in plan.seeds[1:] for model in SEEDED_TWINS]
  runs += [Run(model, first, 'long') for model in LONG_TWINS]
  return runs


def twin_config(dataset: str, model: str) -> str:
  """--config of the twin (or Figure 1 MLP) `model` on `dataset`: one file, its argument."""
  return f'configs/small_scale.py:{model},{dataset}'


def run_steps(run: Run, plan: Plan) -> int:
  if run.is_mlp:
    return plan.mlp_steps
  return plan.long_twin_steps if run.variant == 'long' else plan.twin_steps


def command(run: Run, plan: Plan, dataset: str, workdir: str) -> list[str]:
  """The script and arguments that train `run` in `workdir`."""
  if run.is_mlp:
    return ['scripts/ics_probe.py', '--config', twin_config(dataset, MLPS[run.model]),
            '--workdir', workdir, '--layers', 'hidden3', '--every_steps',
            str(plan.mlp_probe_every), f'--config.train_for={plan.mlp_steps} steps',
            f'--config.hooks.eval.every={plan.mlp_eval_every} steps',
            f'--config.seed={run.seed}', '--noplots']
  config, extra = TWINS[run.model]
  if run.variant == 'per-replica BN':
    config = PER_REPLICA[run.model]
  every = plan.long_eval_every if run.variant == 'long' else plan.twin_eval_every
  args = ['--config', twin_config(dataset, config), '--workdir', workdir,
          f'--config.train_for={run_steps(run, plan)} steps', f'--config.seed={run.seed}',
          f'--config.data.eval_split={plan.twin_eval_split}',
          f'--config.hooks.eval.every={every} steps',
          f'--config.hooks.eval_debiased.every={every} steps',
          f'--config.hooks.eval_population.every={every} steps',
          f'--config.hooks.eval_population.num_batches={plan.eval_population_batches}', *extra]
  if run.model in PROBE_TWINS and not run.variant and run.seed == plan.seeds[0]:
    return ['scripts/ics_probe.py', *args, '--layers', ','.join(PROBE_LAYERS),
            '--every_steps', str(plan.twin_probe_every)]
  return ['scripts/train.py', *args]


def slug(name: str) -> str:
  return ''.join(c.lower() if c.isalnum() else '_' for c in name).strip('_')


def eval_curve(workdir: str, key: str = 'eval_top1') -> tuple[list[int], list[float]]:
  records = [r for r in Workdir(workdir).read_metrics() if key in r]
  return [r['step'] for r in records], [r[key] for r in records]


def steps_to_reach(steps: list[int], values: list[float], target: float) -> int | None:
  """The first step whose value reaches `target` (None if never)."""
  for step, value in zip(steps, values):
    if value >= target:
      return step
  return None


@dataclasses.dataclass(frozen=True)
class Spread:
  """A quantity over seeds: mean, min, max and how many runs had a value."""
  mean: float | None
  low: float | None
  high: float | None
  count: int
  total: int

  @classmethod
  def of(cls, values) -> 'Spread':
    present = [v for v in values if v is not None]
    if not present:
      return cls(None, None, None, 0, len(values))
    return cls(statistics.fmean(present), min(present), max(present), len(present), len(values))

  def format(self, fmt: str = '{:.4f}') -> str:
    if self.mean is None:
      return 'never' if self.total else '-'
    text = fmt.format(self.mean)
    if self.total > 1:
      text += f' ({fmt.format(self.low)}-{fmt.format(self.high)})'
    if self.count < self.total:
      text += f', {self.count}/{self.total} reached'
    return text


def swing(values: list[float]) -> float:
  """Mean absolute change between consecutive evaluations in the second half of a curve."""
  tail = values[len(values) // 2:]
  if len(tail) < 2:
    return 0.0
  return statistics.fmean(abs(b - a) for a, b in zip(tail, tail[1:]))


def model_rows(curves: dict[str, list[dict[str, tuple[list, list]]]], target: float,
               metrics=tuple(TWIN_EVALS)) -> list[dict]:
  """curves: {model: [per seed: {metric prefix: (steps, top1)}]} -> one row per model with
  the Spread of best top-1, final top-1 and steps to `target` for each metric."""
  rows = []
  for model, seeds in curves.items():
    row = {'model': model, 'seeds': len(seeds)}
    for metric in metrics:
      per_seed = [c[metric] for c in seeds if metric in c and c[metric][0]]
      if not per_seed:
        continue
      row[metric] = {
          'best': Spread.of([max(v) for _, v in per_seed]),
          'final': Spread.of([v[-1] for _, v in per_seed]),
          'steps': Spread.of([steps_to_reach(s, v, target) for s, v in per_seed]),
          'swing': Spread.of([swing(v) for _, v in per_seed]),
      }
    rows.append(row)
  return rows


def _cell(row: dict, metric: str, field: str, fmt: str = '{:.4f}') -> str:
  return row[metric][field].format(fmt) if metric in row else '-'


def figure1_markdown(rows: list[dict], target: float) -> str:
  """The MLPs' table ('' before the MLP without BN has finished)."""
  if not rows:
    return ''
  lines = [f'Target: the MLP without BN\'s best test top-1, {target:.4f} (mean over seeds).',
           '', '| run | seeds | steps to target | best top-1 | final top-1 |',
           '|---|---|---|---|---|']
  for r in rows:
    lines.append(f'| {r["model"]} | {r["seeds"]} | {r["eval"]["steps"].format("{:.0f}")} '
                 f'| {r["eval"]["best"].format()} | {r["eval"]["final"].format()} |')
  return '\n'.join(lines)


def figure3_markdown(rows: list[dict], target: float, learning_rates: dict[str, float]) -> str:
  lines = [
      f'Target: the no-BN Inception twin\'s best test top-1, {target:.4f} (mean over its '
      'seeds). Each cell: mean (min-max) over seeds; "k/n reached": runs that reached the '
      'target. BN models are evaluated with population statistics (Algorithm 2, recomputed at '
      'each evaluation); the no-BN ones have no BN statistics.',
      '',
      '| model | seeds | LR | steps to target | best top-1 | final top-1 | paper: steps to 72.2% '
      '| paper: max top-1 |',
      '|---|---|---|---|---|---|---|---|',
  ]
  for r in rows:
    metric = 'eval_population' if 'eval_population' in r else 'eval'
    paper = PAPER_FIGURE3.get(r['model'], ('', ''))
    lines.append(f'| {r["model"]} | {r["seeds"]} | {learning_rates.get(r["model"], 0):g} '
                 f'| {_cell(r, metric, "steps", "{:.0f}")} | {_cell(r, metric, "best")} '
                 f'| {_cell(r, metric, "final")} | {paper[0]} | {paper[1]} |')
  return '\n'.join(lines)


def statistics_markdown(rows: list[dict]) -> str:
  """The three training-time evaluations of each BN model side by side."""
  lines = ['| model | BN statistics | best top-1 | final top-1 | swing between evaluations '
           '(2nd half) |', '|---|---|---|---|---|']
  for r in rows:
    for metric, label in STATS_LABELS.items():
      if metric in r:
        lines.append(f'| {r["model"]} | {label} | {_cell(r, metric, "best")} '
                     f'| {_cell(r, metric, "final")} | {_cell(r, metric, "swing")} |')
  return '\n'.join(lines)


def simple_rows_markdown(rows: list[dict], first: str) -> str:
  """Rows of model_rows for one-seed comparisons: best and final top-1 per statistics."""
  lines = [f'| {first} | BN statistics | best top-1 | final top-1 | steps to target |',
           '|---|---|---|---|---|']
  for r in rows:
    for metric, label in STATS_LABELS.items():
      if metric in r:
        lines.append(f'| {r["model"]} | {label} | {_cell(r, metric, "best")} '
                     f'| {_cell(r, metric, "final")} | {_cell(r, metric, "steps", "{:.0f}")} |')
  return '\n'.join(lines)


def figure4_markdown(rows: list[dict]) -> str:
  lines = ['| model | crops | models | examples | top-1 error | top-5 error |',
           '|---|---|---|---|---|---|']
  for r in rows:
    lines.append(f'| {r["model"]} | {r["crops"]} | {r["models"]} | {r["examples"]} '
                 f'| {100 * r["top1_error"]:.2f}% | {100 * r["top5_error"]:.2f}% |')
  return '\n'.join(lines)


def results_path(out_dir: str, *parts: str) -> str:
  path = os.path.join(out_dir, *parts)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  return path
