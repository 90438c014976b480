"""The report's verdicts: each claim the parts test, from the paper or from results/full's
summary, as held, not held, held in k of n seeds, or not tested, with the numbers it rests on.

A claim about two models compares them seed by seed (one seed trains both), so 'held' means
it held at every seed both have finished; a verdict from one seed says it has no spread.
"""

from __future__ import annotations

import dataclasses

from bn_repro.research import figures
from bn_repro.research import parts as pt
from bn_repro.research import parts_tables as tb
from bn_repro.research import reproduce as rp
from bn_repro.workdir import Workdir

NOT_TESTED = 'not tested'


@dataclasses.dataclass(frozen=True)
class Outcome:
  """One finished run: 'trains', 'at chance' or 'diverged at step N'; its curves (None after
  a NaN/Inf stop) and its final top-1 (population statistics where it has BN)."""
  outcome: str
  curves: dict | None
  final: float | None

  @property
  def trains(self) -> bool:
    return self.outcome == 'trains'


@dataclasses.dataclass(frozen=True)
class Claim:
  claim: str
  source: str      # who makes it: the paper, results/full's summary, issue 22's question
  evidence: str
  verdict: str


Runs = dict[str, dict[int, Outcome]]   # {label: {seed: outcome}}


def outcomes(finished: dict, labels=None) -> Runs:
  """The finished runs of `labels` (all if None), by label and seed."""
  out: Runs = {}
  for run, workdir in finished.items():
    if labels is not None and run.label not in labels:
      continue
    stopped = pt.diverged(workdir)
    outcome, final = tb.rate_outcome(None if stopped else Workdir(workdir).read_results(),
                                     stopped)
    curves = None if stopped else figures.curves_of(workdir, rp.TWIN_EVALS)
    out.setdefault(run.label, {})[run.seed] = Outcome(outcome, curves, final)
  return out


def verdict(holds: list[bool]) -> str:
  n, k = len(holds), sum(holds)
  if not n:
    return NOT_TESTED
  if k == n:
    return 'held' + (' (1 seed: no spread)' if n == 1 else f' ({n} of {n} seeds)')
  if not k:
    return 'not held' + (' (1 seed)' if n == 1 else f' (0 of {n} seeds)')
  return f'held in {k} of {n} seeds'


def _shared_seeds(runs: Runs, *labels: str) -> list[int]:
  seeds = [set(runs.get(label, {})) for label in labels]
  return sorted(set.intersection(*seeds))


def _missing(*labels: str) -> str:
  return f'{" / ".join(labels)}: {tb.NOT_RUN}'


def steps_to(o: Outcome, stats: str, target: float) -> int | None:
  return None if o.curves is None else rp.steps_to_reach(*tb.curve(o.curves, stats), target)


def _sooner(fast: int | None, slow: int | None) -> bool:
  """Steps to a target (None: never): the first reaches it, at an earlier step or alone."""
  return fast is not None and (slow is None or fast < slow)


def fewer_steps(runs: Runs, slow: str, fast: str, stats: str, target: float | None, *,
                claim: str, source: str) -> Claim:
  """`fast` reaches `target` at an earlier evaluation than `slow`, or `slow` never does."""
  claim = f'{claim}, with {stats} statistics'
  seeds = _shared_seeds(runs, slow, fast)
  if target is None or not seeds:
    return Claim(claim, source, _missing(slow, fast), NOT_TESTED)
  pairs = [(steps_to(runs[slow][s], stats, target), steps_to(runs[fast][s], stats, target))
           for s in seeds]
  holds = [_sooner(f, s) for s, f in pairs]
  text = lambda x: 'never' if x is None else str(x)
  evidence = (f'steps to {target:.2%}, seed{"s" * (len(seeds) > 1)} '
              f'{", ".join(map(str, seeds))}: {slow} {", ".join(text(s) for s, _ in pairs)}; '
              f'{fast} {", ".join(text(f) for _, f in pairs)}')
  return Claim(claim, source, evidence, verdict(holds))


def ends_higher(runs: Runs, low: str, high: str, *, claim: str, source: str) -> Claim:
  """`high`'s final top-1 is above `low`'s at each shared seed."""
  seeds = _shared_seeds(runs, low, high)
  finals = [(runs[low][s].final, runs[high][s].final) for s in seeds]
  if not seeds or any(a is None or b is None for a, b in finals):
    return Claim(claim, source, _missing(low, high), NOT_TESTED)
  evidence = (f'final top-1, seed{"s" * (len(seeds) > 1)} {", ".join(map(str, seeds))}: '
              f'{low} {", ".join(f"{a:.2%}" for a, _ in finals)}; '
              f'{high} {", ".join(f"{b:.2%}" for _, b in finals)}; paired difference '
              f'{tb.spread_cell([b - a for a, b in finals], "{:+.2%}")}')
  return Claim(claim, source, evidence, verdict([b > a for a, b in finals]))


def _outcome_text(o: Outcome) -> str:
  return o.outcome if o.final is None else f'{o.outcome} ({o.final:.2%})'


def trains_and_fails(runs: Runs, trains: str | None, fails: str | None, *, claim: str,
                     source: str) -> Claim:
  """At each shared seed `trains` trains and `fails` does not (NaN/Inf stop or at chance);
  either may be None to test one side alone."""
  labels = [label for label in (trains, fails) if label]
  seeds = _shared_seeds(runs, *labels)
  if not seeds:
    return Claim(claim, source, _missing(*labels), NOT_TESTED)
  holds = [(trains is None or runs[trains][s].trains)
           and (fails is None or not runs[fails][s].trains) for s in seeds]
  evidence = '; '.join(f'{label}: ' + ', '.join(f'seed {s} {_outcome_text(runs[label][s])}'
                                                for s in seeds) for label in labels)
  return Claim(claim, source, evidence, verdict(holds))


def every_seed_above(runs: Runs, low: str, highs: tuple[str, ...], *, claim: str,
                     source: str) -> Claim:
  """Every seed of every model in `highs` ends above every seed of `low`."""
  present = [label for label in highs if runs.get(label)]
  if not runs.get(low) or not present:
    return Claim(claim, source, _missing(low, *highs), NOT_TESTED)
  # A NaN/Inf stop ends at no accuracy: 0 for this comparison.
  best_low = max(o.final or 0.0 for o in runs[low].values())
  worst = min((o.final or 0.0, label) for label in present for o in runs[label].values())
  n = sum(len(runs[label]) for label in present)
  evidence = (f'best {low} seed {best_low:.2%} ({len(runs[low])} seeds); worst seed of '
              f'{", ".join(present)} {worst[0]:.2%} ({worst[1]}; {n} runs)')
  held = worst[0] > best_low
  return Claim(claim, source, evidence, 'held' if held else 'not held')


def largest_rate(runs: Runs, plan: pt.PartsPlan, base: str) -> float | None:
  """The largest multiple of the grid that trains at the first seed (None: none trains, or
  the grid is unfinished)."""
  seed = plan.seeds[0]
  cells = [runs.get(pt.rate_label(base, m), {}).get(seed) for m in plan.rate_grid]
  if any(c is None for c in cells):
    raise LookupError(base)
  trained = [m for m, c in zip(plan.rate_grid, cells) if c.trains]
  return max(trained) if trained else None


def higher_rates(runs: Runs, plan: pt.PartsPlan) -> Claim:
  claim = 'BN allows much higher learning rates: BN-Baseline trains at a larger rate than Inception'
  source = 'paper, section 4.2.1'
  try:
    without, with_bn = (largest_rate(runs, plan, 'Inception'),
                        largest_rate(runs, plan, 'BN-Baseline'))
  except LookupError as missing:
    return Claim(claim, source, f'the {missing} rate grid: {tb.NOT_RUN}', NOT_TESTED)
  text = lambda m: 'none' if m is None else f'{m:g}x'
  grid = ', '.join(f'{m:g}' for m in plan.rate_grid)
  evidence = (f'largest rate that trains on the grid ({grid}x the base rate; seed '
              f'{plan.seeds[0]}): Inception {text(without)}, BN-Baseline {text(with_bn)}')
  held = with_bn is not None and (without is None or with_bn > without)
  return Claim(claim, source, evidence, verdict([held]))


def _curves(runs: Runs, label: str) -> list[dict]:
  return [o.curves for _, o in sorted(runs.get(label, {}).items()) if o.curves]


def plateau_target(runs: Runs, plan: pt.PartsPlan) -> float | None:
  """The 10-epoch Inception's plateau: the mean over seeds of its last evaluations."""
  return tb.plateau_mean(_curves(runs, 'Inception, 10 epochs'), plan.plateau_evals)


# (slower, faster, claim, who makes it): steps to Inception's best, with either statistics.
STEP_CLAIMS = (
    ('Inception', 'BN-Baseline', 'BN-Baseline reaches Inception\'s best in fewer steps',
     'paper, section 4.2: 13.3M against 31.0M steps'),
    ('Inception', 'BN-x5', 'BN-x5 reaches Inception\'s best in fewer steps',
     'paper, section 4.2: 2.1M against 31.0M steps'),
    ('BN-x5 without BN', 'BN-x5', 'The speed-up is BN\'s: BN-x5 reaches it before its recipe '
     'without BN', 'issue 22'),
    ('Inception, 6x decay', 'BN-x5', 'The faster annealing alone does not give it: BN-x5 '
     'reaches it before Inception with only the 6x decay', 'issue 22'),
    ('BN-x30', 'BN-x5', 'BN-x5 reaches Inception\'s best before BN-x30',
     'paper, section 4.2: 2.1M against 2.7M steps'),
)
# The 10-epoch models and the paper's steps to 72.2% against Inception's 31.0M.
CONVERGED_CLAIMS = (('BN-Baseline', '13.3M', '2.3x'), ('BN-x5', '2.1M', '14x'),
                    ('BN-x30', '2.7M', '11.5x'))


def from_parts(runs: Runs, plan: pt.PartsPlan) -> list[Claim]:
  """The claims the parts' runs test."""
  target = tb.best_mean(_curves(runs, 'Inception'))
  paper = 'paper, section 4.2'
  out = [fewer_steps(runs, slow, fast, stats, target, claim=claim, source=source)
         for slow, fast, claim, source in STEP_CLAIMS for stats in tb.STATS]
  out += [
      ends_higher(runs, 'Inception', 'BN-Baseline', source=f'{paper}: 72.7% against 72.2%',
                  claim='BN-Baseline ends higher than Inception'),
      ends_higher(runs, 'BN-x5', 'BN-x30', source=f'{paper}: 74.8% against 73.0%',
                  claim='BN-x30 ends higher than BN-x5'),
      every_seed_above(runs, 'Inception', ('BN-Baseline', 'BN-x5', 'BN-x30'),
                       source='results/full summary',
                       claim='Every BN seed ends above every Inception seed'),
      trains_and_fails(runs, 'BN-x30', 'BN-x30 without BN', source='issue 22',
                       claim='BN-x30\'s recipe trains only with BN'),
      higher_rates(runs, plan),
      trains_and_fails(runs, None, 'Inception at BN-x5\'s rate', source=f'{paper}: it diverges',
                       claim='Inception at BN-x5\'s rate fails'),
      trains_and_fails(runs, 'BN-x5-Sigmoid', 'Inception, sigmoid',
                       source=f'{paper}: 69.8% against chance',
                       claim='BN makes the sigmoid network trainable: BN-x5-Sigmoid trains, '
                             'Inception with sigmoid stays at chance'),
  ]
  plateau = plateau_target(runs, plan)
  out += [fewer_steps(runs, 'Inception, 10 epochs', f'{model}, 10 epochs', 'population',
                      plateau, source=f'{paper}: {steps} steps to 72.2%, {factor} fewer',
                      claim=f'{model} reaches Inception\'s converged accuracy (the plateau of '
                            'its 10-epoch run) in fewer steps')
          for model, steps, factor in CONVERGED_CLAIMS]
  out.append(ends_higher(runs, 'BN-x5, 10 epochs', 'BN-x30, 10 epochs',
                         source=f'{paper}: 74.8% against 73.0%',
                         claim='BN-x30 ends higher than BN-x5 after 10 epochs'))
  return out


def from_reference(ensembles: dict[str, dict], mlps: dict[str, list[dict]],
                   thresholds=(0.80, 0.84, 0.85, 0.86, 0.87, 0.88)) -> list[Claim]:
  """The claims results/full's committed files test (its own code, not pooled with the
  parts): the ensembles against their best member, the Figure 1 MLPs, the 144 crops."""
  out = []
  for name, r in ensembles.items():
    gain = r['best_member_error'] - r['ensemble_error']
    p = r['mcnemar_vs_best']['p']
    evidence = (f'{r["members"]} members, {r["images"]} images: ensemble error '
                f'{r["ensemble_error"]:.2%}, best member {r["best_member_error"]:.2%}, mean '
                f'member {r["mean_member_error"]:.2%}; McNemar vs best p={p:.3g}')
    text = ('held (p < 0.05)' if gain > 0 and p < 0.05 else
            'not held' if gain <= 0 else f'not shown (gain {gain:+.2%}, p={p:.2g})')
    out.append(Claim(f'{name}: the ensemble beats its best member', 'paper, Figure 4',
                     evidence, text))
  without, with_bn = mlps.get('MLP without BN'), mlps.get('MLP with BN')
  if without and with_bn:
    sooner, cells = [], []
    for t in thresholds:
      holds = [_reaches_before(b, a, t) for a, b in zip(without, with_bn)]
      sooner.append(all(holds))
      cells.append(f'{t:.0%}: {sum(holds)}/{len(holds)}')
    at = [f'{t:.0%}' for t, s in zip(thresholds, sooner) if s]
    text = ('held' if all(sooner) else 'not held' if not at else f'held at {", ".join(at)} only')
    out.append(Claim('The MLP with BN reaches each test accuracy sooner', 'paper, Figure 1',
                     'seeds where it is strictly sooner, by threshold: ' + '; '.join(cells),
                     text))
    finals = [(a['eval'][1][-1], b['eval'][1][-1]) for a, b in zip(without, with_bn)]
    out.append(Claim('The MLP with BN ends higher', 'paper, Figure 1',
                     'final test top-1 without / with BN by seed: ' + '; '.join(
                         f'{a:.2%} / {b:.2%}' for a, b in finals),
                     verdict([b > a for a, b in finals])))
  out.append(Claim('144 crops improve on one crop',
                   'paper, section 4.2.3: 21.99% against 25.2% error',
                   'the protocol is degenerate on square 28x28 images (section 6)', NOT_TESTED))
  return out


def _reaches_before(fast: dict, slow: dict, target: float) -> bool:
  return _sooner(*(rp.steps_to_reach(*tb.curve(c, 'EMA'), target) for c in (fast, slow)))


def markdown(claims: list[Claim]) -> str:
  lines = ['| claim | from | evidence | verdict |', '|---|---|---|---|']
  lines += [f'| {c.claim} | {c.source} | {c.evidence} | **{c.verdict}** |' for c in claims]
  return '\n'.join(lines)
