"""Plots of training runs (matplotlib, written as PNG files)."""

from __future__ import annotations

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402

from bn_repro import ics_probe  # noqa: E402


def accuracy_curves(curves: dict[str, tuple[list, list]], path: str, *, title: str,
                    ylabel: str = 'test top-1 accuracy') -> None:
  """curves: {label: (steps, accuracies)} on one axis."""
  fig, ax = plt.subplots(figsize=(7, 4.5))
  for label, (steps, values) in curves.items():
    ax.plot(steps, values, label=label, marker='.' if len(steps) < 40 else None)
  ax.set_xlabel('training step')
  ax.set_ylabel(ylabel)
  ax.set_title(title)
  ax.grid(alpha=0.3)
  ax.legend(loc='lower right', fontsize='small')
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def percentile_bands(panels: list[tuple[list[dict], str, str]], path: str) -> None:
  """Figure 1(b, c)-style panels side by side: [(probe records, layer, title)]."""
  fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4), sharey=False)
  axes = axes if len(panels) > 1 else [axes]
  for ax, (records, layer, title) in zip(axes, panels):
    ics_probe.plot_percentiles(records, layer, ax, title)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def drift_curves(series: dict[str, list[dict]], layer: str, path: str) -> None:
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
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
