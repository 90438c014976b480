"""The parts' numbers from curves and per-image correctness: steps to a target with either BN
statistics, contrasts between two models, steps against threshold, the stable-rate verdicts,
and paired tests of ensembles (bn_repro/research/parts_report.py writes them out).

curves: {metric prefix: (steps, top-1)} of one run; groups: {label: [curves per seed]}.
"""

from __future__ import annotations

import math
import statistics

import numpy as np

from bn_repro.research import reproduce as rp

NOT_RUN = 'not run yet'
STATS = {'EMA': 'eval', 'population': 'eval_population'}
CHANCE_FACTOR = 2.0   # a run whose final top-1 is under 2x chance did not train
NUM_CLASSES = 10


def curve(curves: dict, stats: str) -> tuple[list, list]:
  """The run's curve with `stats` (EMA or population); a no-BN run has only the one."""
  metric = STATS[stats]
  if metric in curves and curves[metric][0]:
    return curves[metric]
  return curves['eval']


def value_at(points: tuple[list, list], step: int) -> float | None:
  """The top-1 of the last evaluation at or before `step`."""
  before = [v for s, v in zip(*points) if s <= step]
  return before[-1] if before else None


def best_mean(seeds: list[dict]) -> float | None:
  """The mean over seeds of each seed's best top-1 (EMA): the twins' 'Inception's best'."""
  bests = [max(c['eval'][1]) for c in seeds or () if c['eval'][1]]
  return statistics.fmean(bests) if bests else None


def plateau_mean(seeds: list[dict], evals: int) -> float | None:
  """The mean over seeds of each seed's last `evals` evaluations (EMA): a plateau."""
  plateaus = [statistics.fmean(c['eval'][1][-evals:]) for c in seeds if c['eval'][1]]
  return statistics.fmean(plateaus) if plateaus else None


def steps_cell(seeds: list[dict] | None, stats: str, target: float, run_steps: int) -> str:
  """Mean (min-max) steps to `target` over seeds; a seed that never reaches it counts as the
  run's length, and the mean is then a lower bound ('>=')."""
  if not seeds:
    return NOT_RUN
  steps = [rp.steps_to_reach(*curve(c, stats), target) for c in seeds]
  reached = sum(s is not None for s in steps)
  if not reached:
    return f'never (0/{len(steps)})'
  filled = [s if s is not None else run_steps for s in steps]
  text = ('' if reached == len(steps) else '>=') + f'{statistics.fmean(filled):.0f}'
  if len(steps) > 1:
    text += f' ({min(filled)}-{max(filled)})'
  return text + ('' if reached == len(steps) else f', {reached}/{len(steps)} reached')


def mean_steps(seeds: list[dict], stats: str, target: float, run_steps: int):
  """(mean steps to target with unreached seeds at the run's length, all reached?)."""
  steps = [rp.steps_to_reach(*curve(c, stats), target) for c in seeds]
  return (statistics.fmean(s if s is not None else run_steps for s in steps),
          all(s is not None for s in steps))


def spread_cell(values: list[float | None], fmt: str = '{:.2%}', empty: str = NOT_RUN) -> str:
  present = [v for v in values if v is not None]
  if not present:
    return empty
  text = fmt.format(statistics.fmean(present))
  if len(present) > 1:
    text += f' ({fmt.format(min(present))} to {fmt.format(max(present))})'
  return text


def contrast_rows(groups: dict, contrasts, target: float, run_steps: int,
                  fractions=(0.25, 0.5, 1.0), seeds: dict | None = None) -> list[dict]:
  """contrasts: [(name, without, with)] -> one row each: steps to target with EMA and
  population statistics for both models, the ratio without/with, and top-1 (population
  where BN has it) of both at equal steps with the seed-paired difference. seeds: {label:
  the seed of each entry of groups[label]} (default 0, 1, ...); the difference pairs the two
  models' runs of one seed, so a seed only one of them has finished is left out of it."""
  seeds = seeds or {}
  rows = []
  for name, a, b in contrasts:
    row = {'contrast': name, 'without': a, 'with': b,
           'seeds': f'{len(groups.get(a, []))}/{len(groups.get(b, []))}'}
    for stats in STATS:
      row[f'steps_{stats}'] = (steps_cell(groups.get(a), stats, target, run_steps),
                               steps_cell(groups.get(b), stats, target, run_steps))
      row[f'ratio_{stats}'] = ratio_cell(groups.get(a), groups.get(b), stats, target,
                                         run_steps)
    for fraction in fractions:
      step = round(fraction * run_steps)
      if not groups.get(a) or not groups.get(b):
        row[f'at_{step}'] = NOT_RUN
        continue
      va = [value_at(curve(c, 'population'), step) for c in groups[a]]
      vb = [value_at(curve(c, 'population'), step) for c in groups[b]]
      b_at = dict(zip(seeds.get(b, range(len(vb))), vb))
      paired = [b_at[s] - x for s, x in zip(seeds.get(a, range(len(va))), va)
                if x is not None and b_at.get(s) is not None]
      # '-': no evaluation at or before that step.
      row[f'at_{step}'] = (f'{spread_cell(va, empty="-")} vs {spread_cell(vb, empty="-")}: '
                           f'{spread_cell(paired, "{:+.2%}", empty="-")}')
    rows.append(row)
  return rows


def ratio_cell(a, b, stats: str, target: float, run_steps: int) -> str:
  """Steps without / steps with (>1: the factor is faster); bounds where seeds never reach."""
  if not a or not b:
    return NOT_RUN
  (sa, all_a), (sb, all_b) = (mean_steps(a, stats, target, run_steps),
                              mean_steps(b, stats, target, run_steps))
  if not all_a and not all_b:
    # Seeds of both never reach it: no bound either way.
    reached = any(rp.steps_to_reach(*curve(c, stats), target) is not None for c in a + b)
    return 'some seeds of each never reach it' if reached else 'neither reaches it'
  if not all_b:
    return f'<={sa / sb:.2f}x' if all_a else '?'
  return ('>=' if not all_a else '') + f'{sa / sb:.2f}x'


def contrasts_markdown(rows: list[dict]) -> str:
  if not rows:
    return ''
  at = [k for k in rows[0] if k.startswith('at_')]
  head = ('| contrast | without -> with | seeds | steps to target, EMA | ratio | steps, '
          'population | ratio | ' + ' | '.join(f'top-1 at step {k[3:]} (paired difference)'
                                               for k in at) + ' |')
  lines = [head, '|' + '---|' * (7 + len(at))]
  for r in rows:
    cells = [r['contrast'], f'{r["without"]} -> {r["with"]}', r['seeds'],
             ' / '.join(r['steps_EMA']), r['ratio_EMA'], ' / '.join(r['steps_population']),
             r['ratio_population'], *(r[k] for k in at)]
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def threshold_steps(groups: dict, thresholds, stats: str) -> dict[str, list[float | None]]:
  """{label: mean steps to each threshold over the seeds that reach it (None: none)}."""
  out = {}
  for label, seeds in groups.items():
    row = []
    for t in thresholds:
      steps = [rp.steps_to_reach(*curve(c, stats), t) for c in seeds]
      present = [s for s in steps if s is not None]
      row.append(statistics.fmean(present) if len(present) == len(steps) else None)
    out[label] = row
  return out


def threshold_markdown(groups: dict, thresholds, stats: str, per_seed: bool = False) -> str:
  """Steps to each threshold: mean over seeds ('-': some seed never reached it), or each
  seed's steps."""
  lines = ['| run | ' + ' | '.join(f'{t:.0%}' for t in thresholds) + ' |',
           '|---|' + '---|' * len(thresholds)]
  for label, seeds in groups.items():
    if per_seed:
      for i, c in enumerate(seeds):
        steps = [rp.steps_to_reach(*curve(c, stats), t) for t in thresholds]
        lines.append(f'| {label}, seed {i} | ' + ' | '.join(
            '-' if s is None else str(s) for s in steps) + ' |')
    else:
      means = threshold_steps({label: seeds}, thresholds, stats)[label]
      lines.append(f'| {label} ({len(seeds)} seeds) | ' + ' | '.join(
          '-' if s is None else f'{s:.0f}' for s in means) + ' |')
  return '\n'.join(lines)


def rate_outcome(result: dict | None, diverged: dict | None) -> tuple[str, float | None]:
  """('trains' / 'diverged at step N' / 'at chance' / NOT_RUN, final top-1)."""
  if diverged is not None:
    return f'diverged at step {diverged["step"]}', None
  if result is None:
    return NOT_RUN, None
  final = result.get('eval_population_top1', result.get('eval_top1'))
  if final is None or not math.isfinite(final) or final < CHANCE_FACTOR / NUM_CLASSES:
    return 'at chance', final
  return 'trains', final


def largest_stable(outcomes: dict[float, str]) -> str:
  """The largest rate multiple that trains, and whether every smaller one did."""
  ran = {m: o for m, o in outcomes.items() if o != NOT_RUN}
  trains = [m for m, o in ran.items() if o == 'trains']
  if not ran:
    return NOT_RUN
  if not trains:
    return 'none of the grid'
  top = max(trains)
  gaps = [m for m in ran if m < top and ran[m] != 'trains']
  missing = [m for m, o in outcomes.items() if o == NOT_RUN]
  text = f'{top:g}x' + (f' (but not {", ".join(f"{m:g}x" for m in gaps)})' if gaps else '')
  if missing:
    text += f'; {", ".join(f"{m:g}x" for m in missing)} {NOT_RUN}'
  return text


def mcnemar(a_correct: np.ndarray, b_correct: np.ndarray) -> tuple[int, int, float]:
  """Exact McNemar test: (images only a gets right, only b gets right, two-sided p)."""
  only_a = int(np.sum(a_correct & ~b_correct))
  only_b = int(np.sum(b_correct & ~a_correct))
  n, k = only_a + only_b, min(only_a, only_b)
  if n == 0:
    return only_a, only_b, 1.0
  tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
  return only_a, only_b, min(1.0, 2 * tail)


def paired_bootstrap(diff: np.ndarray, *, samples: int = 10_000, seed: int = 0):
  """95% interval of the mean of per-image differences, resampling images."""
  rng = np.random.default_rng(seed)
  means = diff[rng.integers(0, len(diff), (samples, len(diff)))].mean(1)
  return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def ensemble_comparison(members: dict[str, np.ndarray], labels: np.ndarray) -> dict:
  """members: {name: probabilities [images, classes]} -> the ensemble (mean probabilities)
  against its mean, best and worst member, paired on the same images."""
  correct = {m: np.argmax(p, 1) == labels for m, p in members.items()}
  ens = np.argmax(np.mean(list(members.values()), 0), 1) == labels
  errors = {m: 1 - c.mean() for m, c in correct.items()}
  best = min(errors, key=errors.get)
  worst = max(errors, key=errors.get)
  mean_member_wrong = np.mean([~c for c in correct.values()], 0)
  only_ens, only_best, p = mcnemar(ens, correct[best])
  return {
      'members': len(members), 'images': len(labels), 'ensemble_error': 1 - ens.mean(),
      'mean_member_error': float(np.mean(list(errors.values()))),
      'best_member': best, 'best_member_error': errors[best],
      'worst_member': worst, 'worst_member_error': errors[worst],
      'members_better_than_ensemble': sorted(m for m, e in errors.items() if e < 1 - ens.mean()),
      'gain_vs_mean_ci': paired_bootstrap(mean_member_wrong - ~ens),
      'gain_vs_best_ci': paired_bootstrap((~correct[best]).astype(float) - ~ens),
      'mcnemar_vs_best': {'only_ensemble': only_ens, 'only_best': only_best, 'p': p},
  }


def ensembles_markdown(rows: dict[str, dict]) -> str:
  lines = ['| ensemble | images | error | mean member | best member | worst member | gain vs '
           'mean (95% CI) | gain vs best (95% CI) | McNemar vs best (only ens. / only best, p) '
           '| members better than it |', '|---|---|---|---|---|---|---|---|---|---|']
  for name, r in rows.items():
    lo, hi = r['gain_vs_mean_ci']
    blo, bhi = r['gain_vs_best_ci']
    gain_mean = r['mean_member_error'] - r['ensemble_error']
    gain_best = r['best_member_error'] - r['ensemble_error']
    m = r['mcnemar_vs_best']
    lines.append(
        f'| {name} | {r["images"]} | {r["ensemble_error"]:.2%} | {r["mean_member_error"]:.2%} '
        f'| {r["best_member_error"]:.2%} ({r["best_member"]}) | {r["worst_member_error"]:.2%} '
        f'({r["worst_member"]}) | {gain_mean:+.2%} ({lo:+.2%} to {hi:+.2%}) '
        f'| {gain_best:+.2%} ({blo:+.2%} to {bhi:+.2%}) | {m["only_ensemble"]} / '
        f'{m["only_best"]}, p={m["p"]:.3g} | {len(r["members_better_than_ensemble"])} of '
        f'{r["members"]}: {", ".join(r["members_better_than_ensemble"]) or "none"} |')
  return '\n'.join(lines)
