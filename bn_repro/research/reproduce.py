"""The paper's claims at small scale: which runs, and the tables made from their logs.

`scripts/reproduce.py` runs the plan (each step a recorded command line of
the project's own scripts) and calls the table and plot functions here.
"""

from __future__ import annotations

import dataclasses
import os

from bn_repro.workdir import Workdir


@dataclasses.dataclass(frozen=True)
class Plan:
  mlp_steps: int
  mlp_eval_every: int
  mlp_probe_every: int
  twin_steps: int
  twin_eval_every: int
  twin_probe_every: int
  twin_eval_split: str
  eval_population_batches: int
  population_batches: int
  crops_split: str
  crop_modes: tuple[int, ...]
  ensemble_crops: tuple[int, ...]


# Quick mode: every piece of the full plan at toy length (its wall time on a
# 2-core machine is in the README; most of it is start-up and compilation).
QUICK = Plan(mlp_steps=2000, mlp_eval_every=250, mlp_probe_every=100,
             twin_steps=100, twin_eval_every=50, twin_probe_every=25,
             twin_eval_split='test[:2000]', eval_population_batches=10,
             population_batches=20, crops_split='test[:300]', crop_modes=(1, 10, 144),
             ensemble_crops=(1,))
# Full mode, sized for a CPU machine (README: its wall time): the MLP's 50,000
# steps as in the paper, 1.5 epochs per twin, and multi-crop and ensemble
# evaluations on 1,000 test images (144 crops of the whole test set cost
# 144 forward passes per image).
FULL = Plan(mlp_steps=50_000, mlp_eval_every=1000, mlp_probe_every=500,
            twin_steps=1406, twin_eval_every=176, twin_probe_every=88,
            twin_eval_split='test', eval_population_batches=50,
            population_batches=200, crops_split='test[:1000]', crop_modes=(1, 10, 144),
            ensemble_crops=(1,))

# The paper's five models (Figure 3) and two negative controls (section 4.2.2):
# (config name without the dataset prefix, extra flags).
TWINS = {
    'Inception': ('inception', []),
    'BN-Baseline': ('bn_baseline', []),
    'BN-x5': ('bn_x5', []),
    'BN-x30': ('bn_x30', []),
    'BN-x5-Sigmoid': ('bn_x5_sigmoid', []),
    'Inception at BN-x5\'s rate': ('inception', ['--config.optimizer.learning_rate=0.0075']),
    'Inception, sigmoid': ('inception', ['--config.model.activation=sigmoid']),
}
CONFIG_PREFIX = {'fashion_mnist': 'fmnist', 'mnist': 'mnist'}


def config_file(dataset: str, name: str) -> str:
  """configs/<prefix>_<name>.py: the twin (or Figure 1 MLP) config of `name` for `dataset`."""
  return f'configs/{CONFIG_PREFIX[dataset]}_{name}.py'


BN_TWINS = ('BN-Baseline', 'BN-x5', 'BN-x30', 'BN-x5-Sigmoid')
PROBE_TWINS = ('Inception', 'BN-x5')
PROBE_LAYERS = ('inception_3a/b1x1', 'inception_5b/b1x1')
PAPER_FIGURE3 = {  # the paper's Figure 3: steps to 72.2% and max top-1 on ImageNet
    'Inception': ('31.0e6', '72.2%'), 'BN-Baseline': ('13.3e6', '72.7%'),
    'BN-x5': ('2.1e6', '73.0%'), 'BN-x30': ('2.7e6', '74.8%'),
    'BN-x5-Sigmoid': ('-', '69.8%'),
}


def mlp_command(plan: Plan, dataset: str, batch_norm: bool, workdir: str) -> list[str]:
  """scripts/ics_probe.py's arguments for the Figure 1 MLP, with or without BN."""
  return ['scripts/ics_probe.py', '--config', config_file(dataset, 'mlp_bn' if batch_norm else 'mlp'),
          '--workdir', workdir, '--layers', 'hidden3', '--every_steps', str(plan.mlp_probe_every),
          f'--config.train_for={plan.mlp_steps} steps',
          f'--config.hooks.eval.every={plan.mlp_eval_every} steps', '--noplots']


def twin_command(plan: Plan, dataset: str, name: str, workdir: str) -> list[str]:
  """The script and arguments that train the twin `name` (a key of TWINS); the probe
  twins record the internal-covariate-shift probe too."""
  config, extra = TWINS[name]
  args = ['--config', config_file(dataset, config), '--workdir', workdir,
          f'--config.train_for={plan.twin_steps} steps',
          f'--config.hooks.eval.every={plan.twin_eval_every} steps',
          f'--config.data.eval_split={plan.twin_eval_split}',
          f'--config.hooks.eval_population.every={plan.twin_eval_every} steps',
          f'--config.hooks.eval_population.num_batches={plan.eval_population_batches}', *extra]
  if name in PROBE_TWINS:
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


def figure3_rows(curves: dict[str, dict[str, tuple[list, list]]], reference: str) -> list[dict]:
  """curves: {model: {'ema': (steps, top1), 'population': (steps, top1) or absent}}.

  Target: the best accuracy of `reference` (the no-BN Inception). Each model's
  steps to that target and best accuracy, with each kind of BN statistics.
  """
  target = max(curves[reference]['ema'][1])
  rows = []
  for model, by_stats in curves.items():
    row = {'model': model}
    for stats in ('ema', 'population'):
      if stats in by_stats and by_stats[stats][0]:
        steps, values = by_stats[stats]
        row[f'steps_{stats}'] = steps_to_reach(steps, values, target)
        row[f'best_{stats}'] = max(values)
        row[f'best_step_{stats}'] = steps[values.index(max(values))]
    rows.append(row)
  return [dict(r, target=target) for r in rows]


def _cell(value, fmt='{}'):
  return '-' if value is None else fmt.format(value)


def figure3_markdown(rows: list[dict], learning_rates: dict[str, float]) -> str:
  target = rows[0]['target']
  lines = [
      f'Target: the no-BN Inception twin\'s best test top-1, {target:.4f}. '
      '"EMA": moving-average BN statistics; "pop.": population statistics '
      '(Algorithm 2) recomputed at each evaluation. "never": not reached.',
      '',
      '| model | LR | steps to target (EMA) | steps to target (pop.) | best top-1 (EMA) '
      '| best top-1 (pop.) | paper: steps to 72.2% | paper: max top-1 |',
      '|---|---|---|---|---|---|---|---|',
  ]
  for r in rows:
    paper = PAPER_FIGURE3.get(r['model'], ('', ''))
    never = lambda k: 'never' if k in r and r[k] is None else _cell(r.get(k))
    lines.append(
        f'| {r["model"]} | {learning_rates.get(r["model"], 0):g} | {never("steps_ema")} '
        f'| {never("steps_population")} | {_cell(r.get("best_ema"), "{:.4f}")} '
        f'| {_cell(r.get("best_population"), "{:.4f}")} | {paper[0]} | {paper[1]} |')
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
