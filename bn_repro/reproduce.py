"""The paper's claims at small scale: which runs, and the tables made from their logs.

`scripts/reproduce.py` runs the plan (each step a recorded command line of
the project's own scripts) and calls the table and plot functions here.
"""

from __future__ import annotations

import dataclasses
import os

from bn_repro.metric_logging import read_metrics


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


# Quick mode: every piece of the full plan at toy length, under 15 minutes on
# 2 CPU cores (mostly process start-up and compilation).
QUICK = Plan(mlp_steps=2000, mlp_eval_every=250, mlp_probe_every=100,
             twin_steps=100, twin_eval_every=50, twin_probe_every=25,
             twin_eval_split='test[:2000]', eval_population_batches=10,
             population_batches=20, crops_split='test[:300]', crop_modes=(1, 10, 144),
             ensemble_crops=(1,))
# Full mode, sized for about 1.5 hours on 2 CPU cores: the MLP's 50,000 steps
# as in the paper, 1.5 epochs per twin (the demo's BN-x30 reaches 89.7% after
# two), and multi-crop and ensemble evaluations on 1,000 test images (144
# crops of the whole test set alone would take about 20 minutes here).
FULL = Plan(mlp_steps=50_000, mlp_eval_every=1000, mlp_probe_every=500,
            twin_steps=1406, twin_eval_every=176, twin_probe_every=88,
            twin_eval_split='test', eval_population_batches=50,
            population_batches=200, crops_split='test[:1000]', crop_modes=(1, 10, 144),
            ensemble_crops=(1,))

# The paper's five models (Figure 3) and two negative controls (section 4.2.2).
TWINS = {
    'Inception': ('configs/fmnist_inception.py', []),
    'BN-Baseline': ('configs/fmnist_bn_baseline.py', []),
    'BN-x5': ('configs/fmnist_bn_x5.py', []),
    'BN-x30': ('configs/fmnist_bn_x30.py', []),
    'BN-x5-Sigmoid': ('configs/fmnist_bn_x5_sigmoid.py', []),
    'Inception at BN-x5\'s rate': ('configs/fmnist_inception.py',
                                   ['--config.optimizer.learning_rate=0.0075']),
    'Inception, sigmoid': ('configs/fmnist_inception.py', ['--config.model.activation=sigmoid']),
}
BN_TWINS = ('BN-Baseline', 'BN-x5', 'BN-x30', 'BN-x5-Sigmoid')
PROBE_TWINS = ('Inception', 'BN-x5')
PROBE_LAYERS = ('inception_3a/b1x1', 'inception_5b/b1x1')
PAPER_FIGURE3 = {  # steps to 72.2% and max top-1 on ImageNet (SPEC section 5)
    'Inception': ('31.0e6', '72.2%'), 'BN-Baseline': ('13.3e6', '72.7%'),
    'BN-x5': ('2.1e6', '73.0%'), 'BN-x30': ('2.7e6', '74.8%'),
    'BN-x5-Sigmoid': ('-', '69.8%'),
}


def slug(name: str) -> str:
  return ''.join(c.lower() if c.isalnum() else '_' for c in name).strip('_')


def eval_curve(workdir: str, key: str = 'eval_top1') -> tuple[list[int], list[float]]:
  records = [r for r in read_metrics(workdir) if key in r]
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
