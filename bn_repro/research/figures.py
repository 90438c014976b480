"""Figures 1-3, the BN-batch and the longer-training comparisons, from the finished runs.

Each function draws its plots into the results folder and returns the rows its
table is made of (bn_repro/research/reproduce.py formats them). `finished` is
{Run: workdir} of the runs that reached their planned steps.
"""

from __future__ import annotations

from bn_repro.evaluation import ics_probe
from bn_repro.research import plots
from bn_repro.research import reproduce as rp
from bn_repro.workdir import Workdir

# The results folder's figures (tables.md links them by these names).
FIGURE1A = 'figure1a_accuracy.png'
FIGURE1BC = 'figure1bc_percentiles.png'
BN_BATCH = 'bn_batch.png'
LONGER = 'longer_training.png'


def figure2_file(label: str) -> str:
  """Figure 2 with the BN statistics of STATS_LABELS' `label`."""
  return f'figure2_accuracy_{rp.slug(label)}.png'


def probe_file(layer: str, *, drift: bool = False) -> str:
  """The twins' probe plot of `layer`: its percentiles, or with drift its drift."""
  return f'ics_{rp.slug(layer)}_{"drift" if drift else "percentiles"}.png'


def first_seed_runs(finished: dict, plan: rp.Plan, models) -> dict[str, str]:
  """{model: workdir} of the finished plain runs of `models` at the plan's first seed: the
  one-seed figures show these (and only they have the twins' probe records)."""
  seed = plan.seeds[0]
  return {run.model: workdir for run, workdir in finished.items()
          if run.model in models and not run.variant and run.seed == seed}


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


def figure1(out_dir: str, plan: rp.Plan, finished: dict, dataset: str) -> tuple[list[dict], float]:
  """The MLPs' rows and the target (the no-BN MLP's best); ([], 0.0) before it finished."""
  curves = grouped(finished, rp.MLPS, metrics=('eval',))
  if 'MLP without BN' not in curves:
    return [], 0.0
  target = best_mean(curves['MLP without BN'])
  rows = rp.model_rows(curves, target, metrics=('eval',))
  plots.save(plots.mean_curves({m: [c['eval'] for c in seeds] for m, seeds in curves.items()},
                               title=f'Figure 1(a): 3x100 sigmoid MLP on {dataset}'),
             rp.results_path(out_dir, FIGURE1A))
  probe_runs = first_seed_runs(finished, plan, rp.MLPS)
  if len(probe_runs) == len(rp.MLPS):
    records = {m: ics_probe.read_records(Workdir(w)) for m, w in probe_runs.items()}
    plots.save(plots.percentile_bands(
        [(records['MLP without BN'], 'hidden3', 'Figure 1(b): without BN'),
         (records['MLP with BN'], 'hidden3', 'Figure 1(c): with BN')]),
        rp.results_path(out_dir, FIGURE1BC))
  return rows, target


def figures2_3(out_dir: str, plan: rp.Plan, finished: dict, dataset: str):
  """(rows, {model: learning rate}, target: the no-BN Inception twin's best) of the twins."""
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
        rp.results_path(out_dir, figure2_file(label)))
  probe_runs = first_seed_runs(finished, plan, rp.PROBE_TWINS)
  if len(probe_runs) == len(rp.PROBE_TWINS):
    records = {m: ics_probe.read_records(Workdir(w)) for m, w in probe_runs.items()}
    for layer in rp.PROBE_LAYERS:
      plots.save(plots.percentile_bands([(records[m], layer, f'{m}: {layer}')
                                         for m in rp.PROBE_TWINS]),
                 rp.results_path(out_dir, probe_file(layer)))
      plots.save(plots.drift_curves(records, layer),
                 rp.results_path(out_dir, probe_file(layer, drift=True)))
  return rows, learning_rates, target


def bn_batch(out_dir: str, plan: rp.Plan, finished: dict, target: float) -> list[dict]:
  """Synced BN (64 examples) against the paper's per-replica BN (32 per device), one seed."""
  seed = plan.seeds[0]
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
               rp.results_path(out_dir, BN_BATCH))
  return rp.model_rows(curves, target)


def longer(out_dir: str, finished: dict, target: float) -> list[dict]:
  """BN-x5 and BN-x30 trained longer, one seed."""
  curves = {f'{m}, long': s for m, s in grouped(finished, rp.LONG_TWINS, 'long').items()}
  if curves:
    plots.save(plots.mean_curves({m: [s[0]['eval_population']] for m, s in curves.items()},
                                 title='BN-x5 and BN-x30 trained longer (population statistics)'),
               rp.results_path(out_dir, LONGER))
  return rp.model_rows(curves, target)
