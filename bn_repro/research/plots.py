"""Plots of training runs (matplotlib). Each function returns its figure; `save` writes a PNG."""

from __future__ import annotations

import io

import matplotlib
import numpy as np

from bn_repro import files

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402


def save(fig, path: str) -> None:
  """Writes the figure as PNG to `path` (a local or gs:// path) and closes it."""
  fig.tight_layout()
  buffer = io.BytesIO()
  fig.savefig(buffer, format='png', dpi=120)
  plt.close(fig)
  files.write_bytes(path, buffer.getvalue())


def _label_steps_axes(fig, ax, ylabel: str, title: str):
  """Labels, grid and legend of a curve-over-training-steps plot; returns the figure."""
  ax.set_xlabel('training step')
  ax.set_ylabel(ylabel)
  ax.set_title(title)
  ax.grid(alpha=0.3)
  ax.legend(loc='lower right', fontsize='small')
  return fig


def accuracy_curves(curves: dict[str, tuple[list, list]], *, title: str,
                    ylabel: str = 'test top-1 accuracy'):
  """curves: {label: (steps, accuracies)} on one axis."""
  fig, ax = plt.subplots(figsize=(7, 4.5))
  for label, (steps, values) in curves.items():
    ax.plot(steps, values, label=label, marker='.' if len(steps) < 40 else None)
  return _label_steps_axes(fig, ax, ylabel, title)


def mean_curves(runs: dict[str, list[tuple[list, list]]], *, title: str,
                ylabel: str = 'test top-1 accuracy'):
  """runs: {label: [(steps, values) per seed]}: the mean over seeds as a line and the range
  (min to max) as a band, on the steps every seed evaluated."""
  fig, ax = plt.subplots(figsize=(7, 4.5))
  for label, curves in runs.items():
    steps = sorted(set.intersection(*(set(s) for s, _ in curves)))
    table = np.array([[dict(zip(s, v))[step] for step in steps] for s, v in curves])
    line, = ax.plot(steps, table.mean(0), label=f'{label} ({len(curves)} seeds)'
                    if len(curves) > 1 else label)
    if len(curves) > 1:
      ax.fill_between(steps, table.min(0), table.max(0), alpha=0.2, color=line.get_color())
  return _label_steps_axes(fig, ax, ylabel, title)


def _percentiles(records: list[dict], layer: str, ax, title: str) -> None:
  """The paper's Figure 1(b, c): 15th/50th/85th percentiles of one unit's input over steps."""
  rows = [r for r in records if r['layer'] == layer]
  steps = [r['step'] for r in rows]
  p = {q: [r['unit_percentiles'][q] for r in rows] for q in ('15', '50', '85')}
  ax.fill_between(steps, p['15'], p['85'], alpha=0.25, label='15th-85th percentile')
  ax.plot(steps, p['50'], label='median')
  ax.set_xlabel('training step')
  ax.set_ylabel(f'input of unit {rows[0]["unit"] if rows else "?"}')
  ax.set_title(title)
  ax.legend(loc='best', fontsize='small')


def percentile_bands(panels: list[tuple[list[dict], str, str]]):
  """Figure 1(b, c)-style panels side by side: [(probe records, layer, title)]."""
  fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4), sharey=False,
                           squeeze=False)
  for ax, (records, layer, title) in zip(axes[0], panels):
    _percentiles(records, layer, ax, title)
  return fig


def drift_curves(series: dict[str, list[dict]], layer: str):
  """Drift (Wasserstein-1 of the unit, mean change of channel means) per record, per run."""
  fig, axes = plt.subplots(1, 2, figsize=(11, 4))
  for label, records in series.items():
    rows = [r for r in records if r['layer'] == layer and 'drift_w1' in r]
    steps = [r['step'] for r in rows]
    axes[0].plot(steps, [r['drift_w1'] for r in rows], label=label)
    axes[1].plot(steps, [r['drift_mean'] for r in rows], label=label)
  axes[0].set_title(f'{layer}: W1 between consecutive records (one unit)')
  axes[1].set_title(f'{layer}: mean |change of channel means|')
  for ax in axes:
    ax.set_xlabel('training step')
    ax.set_yscale('log')
    ax.grid(alpha=0.3)
    ax.legend(fontsize='small')
  return fig


def threshold_curves(series: dict[str, tuple[list, list]], *, title: str):
  """series: {label: (thresholds, mean steps to reach each; None where some seed never did)}:
  steps against threshold, one line per run; a line ends where a seed stops reaching."""
  fig, ax = plt.subplots(figsize=(7, 4.5))
  for label, (thresholds, steps) in series.items():
    points = [(t, s) for t, s in zip(thresholds, steps) if s is not None]
    if points:
      linestyle = '--' if label.endswith('(EMA)') else '-'
      ax.plot(*zip(*points), marker='.', linestyle=linestyle, label=label)
  return _finish(fig, ax, 'test top-1 threshold', 'training steps to reach it (mean over seeds)',
                 title, legend=('upper left', 'x-small'))


def rate_accuracy(series: dict[str, list[tuple[float, float | None]]], *, title: str,
                  chance: float):
  """series: {model: [(learning rate, final top-1 or None when it diverged)]}: final accuracy
  against the rate (log axis); a diverged run is an x at chance."""
  fig, ax = plt.subplots(figsize=(7, 4.5))
  for label, points in series.items():
    points = sorted(points, key=lambda p: p[0])
    line, = ax.plot([r for r, a in points if a is not None],
                    [a for _, a in points if a is not None], marker='o', label=label)
    failed = [r for r, a in points if a is None]
    if failed:
      ax.plot(failed, [chance] * len(failed), 'x', markersize=10, color=line.get_color(),
              label=f'{label}: NaN stop')
  ax.axhline(chance, color='gray', linewidth=0.8, linestyle=':')
  ax.set_xscale('log')
  return _finish(fig, ax, 'learning rate (as trained: config rate x lr_scale)', 'final test top-1',
                 title, legend=('best', 'small'))


def _finish(fig, ax, xlabel: str, ylabel: str, title: str, *, legend: tuple[str, str]):
  """Axis labels, title, grid and legend (location, font size); returns the figure."""
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  ax.set_title(title)
  ax.grid(alpha=0.3)
  ax.legend(loc=legend[0], fontsize=legend[1])
  return fig
