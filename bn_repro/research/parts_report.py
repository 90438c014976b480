"""The parts' report: tables.md, summary.json and the plots of the runs finished so far
(a part not run yet shows 'not run yet'), and the corrections to results/full's report that
its committed files support.

Every table first checks that its runs share one code identity
(bn_repro/research/code_identity.py): a table pooling runs of different code is
refused, or made and flagged when allow_mixed_code.
"""

from __future__ import annotations

import glob
import json
import os

import numpy as np

from bn_repro.data import crops
from bn_repro.research import claims, code_identity, figure4, figures, plots
from bn_repro.research import parts as pt
from bn_repro.research import parts_tables as tb
from bn_repro.research import reproduce as rp
from bn_repro.workdir import Workdir, write_json_on_process_0

TABLES_FILE = 'tables.md'
SUMMARY_FILE = 'summary.json'
THRESHOLD_PLOT = 'steps_vs_threshold.png'
RATE_PLOT = 'stable_rate.png'
REFERENCE_THRESHOLD_PLOT = 'full_steps_vs_threshold.png'
THRESHOLDS = tuple(t / 100 for t in range(70, 92))
STOPPED = {metric: ([], []) for metric in rp.TWIN_EVALS}   # the curves of a NaN/Inf stop
CONTRASTS = (
    ('BN in BN-x5\'s recipe', 'BN-x5 without BN', 'BN-x5'),
    ('BN in BN-x30\'s recipe', 'BN-x30 without BN', 'BN-x30'),
    ('BN in the base recipe', 'Inception', 'BN-Baseline'),
    ('6x decay, no BN', 'Inception', 'Inception, 6x decay'),
    ('6x decay, with BN', 'BN-Baseline', 'BN-Baseline, 6x decay'),
    ('rest of BN-x5\'s recipe, no BN', 'Inception, 6x decay', 'BN-x5 without BN'),
    ('everything (BN-x5 vs Inception)', 'Inception', 'BN-x5'),
)


def claims_head(plan: pt.PartsPlan) -> str:
  return ('Each claim as the runs of sections 2-5 (this code) or results/full\'s committed '
          'files (section 6) test it. A comparison of two models pairs them seed by seed: '
          '"held" means at every seed both finished, "held in k of n seeds" only at some. '
          'Steps are to the first evaluation at or above the target (every '
          f'{plan.eval_every} steps of {plan.twin_steps}; {plan.long_eval_every} of '
          f'{plan.long_steps} in 10 epochs), so two runs that reach it at one evaluation tie, '
          'and a tie is not sooner. Inception\'s best: the mean over its seeds of each seed\'s '
          'best EMA top-1.\n\n')


class Sections:
  """The report's sections, each made only from runs of one code identity (or flagged)."""

  def __init__(self, allow_mixed_code: bool):
    self.allow_mixed = allow_mixed_code
    self.parts = []
    self.refused = []

  def add(self, title: str, runs: dict[str, str], make) -> None:
    """make() -> the section's Markdown, called only if its runs may pool."""
    check = code_identity.check_pool(runs)
    self.parts.append(f'\n## {title}\n\n')
    if not check.ok and not self.allow_mixed:
      self.refused.append(title)
      self.parts.append(f'**Refused**: {check.note}. Re-run them at one code, or pass '
                        '--allow_mixed_code to make the table anyway (flagged).\n')
      return
    if not check.ok:
      self.parts.append(f'**Flagged: pools runs of different code** ({check.note}).\n\n')
    elif check.note:
      self.parts.append(f'Note: {check.note}.\n\n')
    self.parts.append(make() + '\n')


def groups_of(finished: dict, labels) -> dict[str, list[dict]]:
  """{label: [curves per seed, seed order]} of the finished runs of `labels`. A run that
  stopped on NaN/Inf is a seed that never reaches any target: empty curves, whatever it
  logged before the stop."""
  return {label: [STOPPED if pt.diverged(finished[r]) else
                  figures.curves_of(finished[r], rp.TWIN_EVALS) for r in runs]
          for label, runs in _runs_by_seed(finished, labels).items()}


def seeds_of(finished: dict, labels) -> dict[str, list[int]]:
  """{label: the seed of each entry of groups_of's list}."""
  return {label: [r.seed for r in runs]
          for label, runs in _runs_by_seed(finished, labels).items()}


def _runs_by_seed(finished: dict, labels) -> dict[str, list]:
  out = {}
  for label in labels:
    runs = sorted((r for r in finished if r.label == label), key=lambda r: r.seed)
    if runs:
      out[label] = runs
  return out


def workdirs_of(finished: dict, labels) -> dict[str, str]:
  return {f'{r.label}, seed {r.seed}': w for r, w in finished.items() if r.label in labels}


def model_table(groups: dict, labels, target: float | None, run_steps: int) -> str:
  """Per model: seeds, best and final top-1 and steps to target, with EMA and population."""
  lines = ['| run | seeds | statistics | best top-1 | final top-1 | steps to target |',
           '|---|---|---|---|---|---|']
  for label in labels:
    seeds = groups.get(label)
    if not seeds:
      lines.append(f'| {label} | 0 | - | {tb.NOT_RUN} | | |')
      continue
    for stats in tb.STATS:
      if stats == 'population' and not any(c.get('eval_population', ([],))[0] for c in seeds):
        continue
      points = [tb.curve(c, stats) for c in seeds]
      none = {'empty': 'stopped on NaN/Inf'}   # every seed stopped before an evaluation
      steps = tb.steps_cell(seeds, stats, target, run_steps) if target else '-'
      lines.append(f'| {label} | {len(seeds)} | {stats} | '
                   f'{tb.spread_cell([max(v) if v else None for _, v in points], **none)} | '
                   f'{tb.spread_cell([v[-1] if v else None for _, v in points], **none)} | '
                   f'{steps} |')
  return '\n'.join(lines)


def inception_best(groups: dict, label: str = 'Inception') -> float | None:
  return tb.best_mean(groups.get(label))


def same_code(finished: dict, plan: pt.PartsPlan, reference: str) -> str:
  """The committed BN-x5 run against the same seed at the current code, both augmentations."""
  seed = plan.same_code_seed
  committed = os.path.join(reference, 'runs', f'bn_x5_seed{seed}')
  runs = {'committed (results/full)': committed,
          'now, augmentation in tf.data': _find(finished, 'BN-x5, augmentation in tf.data', seed),
          'now, augmentation on the device': _find(finished, 'BN-x5', seed)}
  spread_runs = [os.path.join(reference, 'runs', f'bn_x5_seed{s}') for s in (0, 1, 2)]
  spread_runs = [w for w in spread_runs if os.path.exists(Workdir(w).metrics_file)]
  lines = ['Population statistics at each evaluation. "Seed spread": max - min over the '
           f'committed BN-x5 seeds ({len(spread_runs)}) of the same quantity.', '',
           '| run | best top-1 | final top-1 | max abs difference from the committed curve |',
           '|---|---|---|---|']
  if not os.path.exists(Workdir(committed).metrics_file):
    return f'The committed run {committed} is missing: nothing to compare.'
  base = rp.eval_curve(committed, 'eval_population_top1')
  curves = {}
  for label, w in runs.items():
    if w is None:
      lines.append(f'| {label} | {tb.NOT_RUN} | | |')
      continue
    curves[label] = rp.eval_curve(w, 'eval_population_top1')
    shared = dict(zip(*base))
    diffs = [abs(v - shared[s]) for s, v in zip(*curves[label]) if s in shared]
    lines.append(f'| {label} | {max(curves[label][1]):.2%} | {curves[label][1][-1]:.2%} | '
                 f'{max(diffs):.2%} over {len(diffs)} evaluations |')
  spreads = [rp.eval_curve(w, 'eval_population_top1')[1] for w in spread_runs]
  best_range = max(max(v) for v in spreads) - min(max(v) for v in spreads)
  final_range = max(v[-1] for v in spreads) - min(v[-1] for v in spreads)
  lines += ['', f'Seed spread: best {best_range:.2%}, final {final_range:.2%}.', '']
  for label, (_, values) in curves.items():
    if label.startswith('committed'):
      continue
    d_best, d_final = max(values) - max(base[1]), values[-1] - base[1][-1]
    poolable = abs(d_best) <= best_range and abs(d_final) <= final_range
    lines.append(f'- {label}: best {d_best:+.2%}, final {d_final:+.2%} against the committed '
                 'run: ' + ('within the seed spread, so it **may be pooled** with the committed '
                            'runs' if poolable else '**outside the seed spread: do not pool**; '
                            're-run the committed runs at the current code') + '.')
  if len(curves) < len(runs):
    lines.append(f'- Verdict incomplete: {len(runs) - len(curves)} run(s) {tb.NOT_RUN}.')
  return '\n'.join(lines)


def _find(finished: dict, label: str, seed: int) -> str | None:
  return next((w for r, w in finished.items() if r.label == label and r.seed == seed), None)


def controls(out_dir: str, finished: dict, plan: pt.PartsPlan) -> str:
  labels = pt.CONTROL_PARENTS + pt.RECIPE_CONTROLS
  groups = groups_of(finished, labels)
  target = inception_best(groups)
  diverged = [f'{r.label} seed {r.seed} (step {pt.diverged(w)["step"]})'
              for r, w in finished.items() if r.label in labels and pt.diverged(w)]
  parts = [f'Target: the Inception twin\'s best test top-1 at this code, '
           + (f'{target:.4f} (mean over its seeds)' if target else tb.NOT_RUN)
           + f'. Runs of {plan.twin_steps} steps; a seed that never reaches the target counts '
           'as the run\'s length (the mean is then a lower bound, ">=").'
           + (f' Stopped on NaN/Inf: {", ".join(diverged)}.' if diverged else ''), '',
           model_table(groups, labels, target, plan.twin_steps), '',
           '### Decomposition: what each change buys', '',
           'Each row changes one thing (or one group of things) between two runs at the same '
           'seeds. Steps: without / with; ratio > 1: the change reaches the target sooner. '
           'Top-1 at equal steps with population statistics where the model has BN; the '
           'difference is paired by seed (with - without).', '']
  if target:
    parts.append(tb.contrasts_markdown(tb.contrast_rows(
        groups, CONTRASTS, target, plan.twin_steps, seeds=seeds_of(finished, labels))))
  else:
    parts.append(f'Decomposition: {tb.NOT_RUN} (needs the Inception twin).')
  if groups:
    series = {}
    for stats in tb.STATS:
      for label, steps in tb.threshold_steps(groups, THRESHOLDS, stats).items():
        series[f'{label} ({stats})'] = (THRESHOLDS, steps)
    plots.save(plots.threshold_curves(series, title='Steps to each test top-1 threshold'),
               rp.results_path(out_dir, THRESHOLD_PLOT))
    parts += ['', '### Steps against threshold (population statistics; "-": a seed never '
              'reached it)', '', tb.threshold_markdown(groups, THRESHOLDS[::2], 'population'),
              '', f'![steps vs threshold]({THRESHOLD_PLOT})']
  return '\n'.join(parts)


def stable_rate(out_dir: str, finished: dict, plan: pt.PartsPlan, dataset: str) -> str:
  lines = ['A run fails if it stops on a NaN/Inf loss (the loop raises TrainingDiverged and the '
           f'script exits 2) or ends under {tb.CHANCE_FACTOR:g}x chance top-1. Seed '
           f'{plan.seeds[0]}, {plan.twin_steps} steps; the rate as trained is the config rate '
           'x lr_scale.', '', '| model | x base rate | config rate | rate as trained | outcome '
           '| final top-1 |', '|---|---|---|---|---|---|']
  series, verdicts = {}, {}
  for base in pt.RATE_MODELS:
    outcomes = {}
    for m in plan.rate_grid:
      run = pt.PartRun(pt.rate_label(base, m), plan.seeds[0])
      w = finished.get(run)
      result = Workdir(w).read_results() if w else None
      outcome, final = tb.rate_outcome(result, pt.diverged(w) if w else None)
      outcomes[m] = outcome
      trained = '-'
      if w:
        optimizer = Workdir(w).load_config().optimizer
        trained = optimizer.learning_rate * optimizer.lr_scale
        series.setdefault(base, []).append((trained, final))
        trained = f'{trained:g}'
      lines.append(f'| {base} | {m:g} | {pt.BASE_RATE * m:g} | {trained} | {outcome} | '
                   f'{"" if final is None else f"{final:.2%}"} |')
    verdicts[base] = tb.largest_stable(outcomes)
  lines += ['', '| model | largest rate that trains (x base) |', '|---|---|']
  lines += [f'| {b} | {v} |' for b, v in verdicts.items()]
  if series:
    plots.save(plots.rate_accuracy(series, title=f'Final top-1 against the rate ({dataset})',
                                   chance=1 / tb.NUM_CLASSES),
               rp.results_path(out_dir, RATE_PLOT))
    lines += ['', f'![stable rate]({RATE_PLOT})']
  return '\n'.join(lines)


def seeds(finished: dict, plan: pt.PartsPlan) -> str:
  groups = groups_of(finished, pt.SEEDED + ('Inception',))
  table = model_table(groups, pt.SEEDED + ('Inception',), inception_best(groups),
                      plan.twin_steps)
  return ('Steps to the Inception twin\'s best at this code (the controls part\'s Inception '
          'runs, when finished).\n\n' + table)


def converged(finished: dict, plan: pt.PartsPlan) -> str:
  groups = groups_of(finished, pt.LONG)
  inception = groups.get('Inception, 10 epochs')
  if inception:
    k = plan.plateau_evals
    target = tb.plateau_mean(inception, k)
    head = (f'Target: the Inception twin\'s plateau, the mean of its last {k} evaluations '
            f'(every {plan.long_eval_every} steps), mean over {len(inception)} seed(s): '
            f'{target:.4f}.')
  else:
    target, head = None, f'Target: {tb.NOT_RUN} (needs the 10-epoch Inception).'
  return head + '\n\n' + model_table(groups, pt.LONG, target, plan.long_steps)


def reference_corrections(out_dir: str, reference: str, ensembles: dict, mlps: dict) -> str:
  """What results/full's own files say on the sentences issue 22 questions."""
  runs = os.path.join(reference, 'runs')
  if not os.path.isdir(runs):
    return f'{reference} has no runs.'
  twins = {'Inception': 'inception', 'BN-Baseline': 'bn_baseline', 'BN-x5': 'bn_x5',
           'BN-x30': 'bn_x30'}
  workdirs = {label: sorted(glob.glob(os.path.join(runs, f'{slug}_seed[0-9]')))
              for label, slug in twins.items()}
  workdirs = {label: w for label, w in workdirs.items() if w}
  groups = {label: [figures.curves_of(w, rp.TWIN_EVALS) for w in ws]
            for label, ws in workdirs.items()}
  seed_numbers = {label: [int(w[-1]) for w in ws] for label, ws in workdirs.items()}
  parts = []
  target = inception_best(groups)
  if target:
    steps = rp.FULL.twin_steps
    parts += [f'### Steps to Inception\'s best ({target:.4f}) with either statistics', '',
              '| model | EMA | population |', '|---|---|---|']
    for label, seeds in groups.items():
      parts.append(f'| {label} | {tb.steps_cell(seeds, "EMA", target, steps)} | '
                   f'{tb.steps_cell(seeds, "population", target, steps)} |')
    rows = tb.contrast_rows(groups, [('BN-Baseline', 'Inception', 'BN-Baseline'),
                                     ('BN-x5', 'Inception', 'BN-x5'),
                                     ('BN-x30', 'Inception', 'BN-x30')], target, steps,
                            seeds=seed_numbers)
    parts += ['', 'Fewer steps than Inception: ' + '; '.join(
        f'{r["with"]} {r["ratio_EMA"]} (EMA), {r["ratio_population"]} (population)'
        for r in rows) + '. Inception reaches its own best only near its last step, so every '
        'ratio is capped by the run\'s length.', '']
    series = {f'{label} ({stats})': (THRESHOLDS, s) for stats in tb.STATS
              for label, s in tb.threshold_steps(groups, THRESHOLDS, stats).items()}
    plots.save(plots.threshold_curves(series, title='results/full: steps to each threshold'),
               rp.results_path(out_dir, REFERENCE_THRESHOLD_PLOT))
    parts += [tb.threshold_markdown(groups, THRESHOLDS[::2], 'population'), '',
              f'![results/full steps vs threshold]({REFERENCE_THRESHOLD_PLOT})', '']
  if mlps:
    parts += ['### The MLPs: steps to each threshold, seed by seed', '',
              tb.threshold_markdown(mlps, (0.80, 0.84, 0.85, 0.86, 0.87, 0.88), 'EMA',
                                    per_seed=True), '']
  if ensembles:
    parts += ['### Ensembles against their mean and best member (paired, same images)', '',
              'Gain: member error - ensemble error; 95% intervals from a paired bootstrap '
              'over images (10,000 resamples); McNemar\'s exact test on the images only one '
              'of the two gets right.', '', tb.ensembles_markdown(ensembles), '']
  parts += ['### 144 crops on 28x28 square images', '', crop_note()]
  return '\n'.join(parts)


def reference_mlps(reference: str) -> dict[str, list[dict]]:
  """The Figure 1 MLPs of results/full, seed by seed ({} unless both were run)."""
  mlps = {label: [figures.curves_of(w, ('eval',)) for w in
                  sorted(glob.glob(os.path.join(reference, 'runs', f'{slug}_seed[0-9]')))]
          for label, slug in (('MLP without BN', 'mlp_without_bn'),
                              ('MLP with BN', 'mlp_with_bn'))}
  return mlps if all(mlps.values()) else {}


def reference_ensembles(reference: str) -> dict[str, dict]:
  """The Figure 4 ensembles of results/full, from their members' saved probabilities."""
  out = {}
  for path in sorted(glob.glob(os.path.join(reference, 'eval', 'ensemble_*.json'))):
    with open(path, encoding='utf-8') as f:
      table = json.load(f)
    members, labels = {}, None
    for row in table['rows']:
      if not row['workdir']:
        continue
      # Recorded as an absolute path on the machine that ran it: found by its name here.
      workdir = os.path.join(reference, 'runs', os.path.basename(row['workdir']))
      npz = glob.glob(os.path.join(workdir, 'eval', f'*_{table["stats"]}_{table["crops"]}crop'
                                                    f'_step{row["step"]}.npz'))
      if not npz:
        break
      with np.load(npz[0]) as data:
        members[os.path.basename(workdir)] = data['probs']
        labels = data['labels']
    else:
      name = figure4.label_of(os.path.basename(path)[:-5], len(members), table['crops'])
      out[name] = tb.ensemble_comparison(members, labels)
  return out


def crop_note() -> str:
  """How many of the 144 crops differ on a square 28x28 image evaluated whole."""
  size, fraction = 28, 1.0
  resized = {s: (s, s) for s in crops.shorter_sides(144, size, fraction)}
  views = crops.crops_for(144, size, resized, fraction)
  distinct = len(set(views))
  plain = sum(c.shorter == size and c.box == (0, 0, size, size) for c in views)
  return (f'The protocol is degenerate here: on a square image its three squares coincide, '
          f'and at the smallest scale ({size}) every crop is the whole image, so of the '
          f'{len(views)} crops only {distinct} differ, and the whole image (or its mirror) is '
          f'{plain} of them. The other scales ({", ".join(str(s) for s in resized if s != size)}'
          ') zoom in and cut the garments\' edges off. A null result of 144 crops at this scale '
          'says nothing about the paper\'s ImageNet protocol.')


def write(out_dir: str, *, mode: str, dataset: str, plan: pt.PartsPlan, parts: tuple[str, ...],
          finished: dict, reference: str, identity: dict, commands: list,
          allow_mixed_code: bool) -> list[str]:
  """Writes tables.md and summary.json; returns the titles of the refused sections."""
  sections = Sections(allow_mixed_code)
  all_runs = {p: pt.part_runs(p, plan) for p in pt.PARTS}
  sections.add('1. Same code: the committed BN-x5 seed re-run now',
               workdirs_of(finished, ('BN-x5, augmentation in tf.data',)),
               lambda: same_code(finished, plan, reference))
  sections.add('2. Recipe against BN: controls', workdirs_of(
      finished, pt.CONTROL_PARENTS + pt.RECIPE_CONTROLS), lambda: controls(out_dir, finished,
                                                                            plan))
  sections.add('3. The largest stable learning rate', workdirs_of(
      finished, {r.label for r in all_runs['stable_rate']}),
      lambda: stable_rate(out_dir, finished, plan, dataset))
  sections.add('4. More seeds for the single-seed runs',
               workdirs_of(finished, pt.SEEDED + ('Inception',)), lambda: seeds(finished, plan))
  sections.add('5. A converged baseline: 10 epochs', workdirs_of(finished, pt.LONG),
               lambda: converged(finished, plan))
  ensembles = reference_ensembles(reference) if os.path.isdir(reference) else {}
  mlps = reference_mlps(reference)
  sections.add('6. What results/full\'s committed files say (corrections)', {},
               lambda: reference_corrections(out_dir, reference, ensembles, mlps))
  verdicts = (claims.from_parts(claims.outcomes(finished), plan)
              + claims.from_reference(ensembles, mlps))
  claims_title = '7. The claims: held, not held, not tested'
  sections.add(claims_title, workdirs_of(finished, {r.label for r in finished}),
               lambda: claims_head(plan) + claims.markdown(verdicts))
  identities = sorted((r.slug, code_identity.of_run(w)) for r, w in finished.items())
  progress = [f'{p}: {sum(r in finished for r in runs)}/{len(runs)} finished'
              for p, runs in all_runs.items()]
  head = [f'# Which part of the speed-up is BN\'s ({mode} mode, {dataset})\n\n',
          f'Parts asked for this invocation: {", ".join(parts)}. Runs finished: '
          f'{"; ".join(progress)}. Code now: commit {identity["commit"][:12]}'
          f'{" (dirty)" if identity["dirty"] else ""}, code {identity["code_hash"]}, '
          + ', '.join(f'{k} {v}' for k, v in identity['versions'].items())
          + (f', on {identity["host"]["cpu"]}' if 'host' in identity else '') + '.\n\n',
          '## Code identity of each run\n\n| run | code | host CPU |\n|---|---|---|\n',
          *(f'| {slug} | {i.label} | {", ".join(i.cpus) or "not recorded"} |\n'
            for slug, i in identities)]
  with open(rp.results_path(out_dir, TABLES_FILE), 'w', encoding='utf-8') as f:
    f.write(''.join(head + sections.parts))
  write_json_on_process_0(rp.results_path(out_dir, SUMMARY_FILE), {
      'mode': mode, 'dataset': dataset, 'plan': plan.__dict__, 'parts': list(parts),
      'progress': progress, 'code_now': identity, 'refused_sections': sections.refused,
      'runs': {slug: i.label for slug, i in identities},
      'run_cpus': {slug: list(i.cpus) for slug, i in identities},
      # A refused section's verdicts pool runs of different code: not written.
      'claims': [] if claims_title in sections.refused else [c.__dict__ for c in verdicts],
      'commands': commands})
  return sections.refused
