"""The runs that separate BN from the recipe (issue 22), as named parts of a plan launched
part by part: each run a model of configs/small_scale.py plus --config overrides.

  same_code    BN-x5 seed 0 at the current code, augmentation in tf.data and on the device,
               against the committed run of results/full
  controls     BN-x5's and BN-x30's recipes without BN, Inception and BN-Baseline with only
               the 6x faster decay, and their four parents, at one code
  stable_rate  Inception, BN-Baseline and Inception-sigmoid over a geometric grid of rates
  seeds        more seeds of the single-seed runs of results/full
  converged    Inception and BN-Baseline for 10 epochs, and BN-x5 and BN-x30 as long

A run shared by two parts (the 1x rate of the grid is the controls' Inception)
trains once, in one workdir. A run that stops on a NaN/Inf loss is a result
(the stable-rate grid looks for it): the runner records it in the workdir and
never retries it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re

from bn_repro.research import code_identity
from bn_repro.research import reproduce as rp
from bn_repro.research.command_runner import Runner
from bn_repro.workdir import Workdir

DIVERGED_FILE = 'diverged.json'   # in the workdir of a run that stopped on NaN/Inf
DIVERGED = re.compile(r'became NaN/Inf at step (\d+)')


@dataclasses.dataclass(frozen=True)
class PartsPlan:
  seeds: tuple[int, ...]
  twin_steps: int
  eval_every: int
  eval_split: str
  eval_population_batches: int
  long_steps: int
  long_eval_every: int
  rate_grid: tuple[float, ...]   # multiples of each model's base learning rate
  plateau_evals: int             # Inception's last evaluations whose mean is its plateau
  same_code_seed: int            # the committed BN-x5 seed re-run by same_code


# Lengths and cadences as the main plans', so that same_code compares like with like.
FULL = PartsPlan(seeds=rp.FULL.seeds, twin_steps=rp.FULL.twin_steps,
                 eval_every=rp.FULL.twin_eval_every, eval_split=rp.FULL.twin_eval_split,
                 eval_population_batches=rp.FULL.eval_population_batches,
                 long_steps=rp.FULL.long_twin_steps, long_eval_every=rp.FULL.long_eval_every,
                 rate_grid=(1, 3, 10, 30, 100, 300), plateau_evals=5, same_code_seed=0)
# Toy lengths: each command runs end to end in a minute or so (mostly compilation).
QUICK = PartsPlan(seeds=(0, 1), twin_steps=20, eval_every=10, eval_split='test[:500]',
                  eval_population_batches=2, long_steps=30, long_eval_every=10,
                  rate_grid=(1, 1e4), plateau_evals=2, same_code_seed=0)


@dataclasses.dataclass(frozen=True)
class Variant:
  """One trained configuration: a model of configs/small_scale.py and --config overrides."""
  model: str
  overrides: tuple[str, ...] = ()
  long: bool = False


BASE_RATE = 0.0015   # configs/base.py: the paper's Inception rate, before LR_SCALE
SIGMOID = '--config.model.activation=sigmoid'
NO_BN = '--config.model.batch_norm=False'
DECAY_6X = '--config.optimizer.lr_decay_speedup=6.0'
TF_DATA = '--config.data.augment_on_device=False'

VARIANTS = {
    'Inception': Variant('inception'),
    'BN-Baseline': Variant('bn_baseline'),
    'BN-x5': Variant('bn_x5'),
    'BN-x30': Variant('bn_x30'),
    'BN-x5 without BN': Variant('bn_x5', (NO_BN,)),
    'Inception, 6x decay': Variant('inception', (DECAY_6X,)),
    'BN-Baseline, 6x decay': Variant('bn_baseline', (DECAY_6X,)),
    'BN-x30 without BN': Variant('bn_x30', (NO_BN,)),
    'BN-x5, augmentation in tf.data': Variant('bn_x5', (TF_DATA,)),
    'BN-x5-Sigmoid': Variant('bn_x5_sigmoid'),
    'Inception at BN-x5\'s rate': Variant('inception',
                                          ('--config.optimizer.learning_rate=0.0075',)),
    'Inception, sigmoid': Variant('inception', (SIGMOID,)),
    'Inception, 10 epochs': Variant('inception', long=True),
    'BN-Baseline, 10 epochs': Variant('bn_baseline', long=True),
    'BN-x5, 10 epochs': Variant('bn_x5', long=True),
    'BN-x30, 10 epochs': Variant('bn_x30', long=True),
}
# Each control: (its parent, the config fields it changes and nothing else).
CONTROLS = {
    'BN-x5 without BN': ('BN-x5', ('model.batch_norm',)),
    'Inception, 6x decay': ('Inception', ('optimizer.lr_decay_speedup',)),
    'BN-Baseline, 6x decay': ('BN-Baseline', ('optimizer.lr_decay_speedup',)),
    'BN-x30 without BN': ('BN-x30', ('model.batch_norm',)),
    'BN-x5, augmentation in tf.data': ('BN-x5', ('data.augment_on_device',)),
}
RECIPE_CONTROLS = ('BN-x5 without BN', 'Inception, 6x decay', 'BN-Baseline, 6x decay',
                   'BN-x30 without BN')
CONTROL_PARENTS = ('Inception', 'BN-Baseline', 'BN-x5', 'BN-x30')
# The stable-rate grid's models: {label at 1x: (model, overrides besides the rate)}.
RATE_MODELS = {'Inception': ('inception', ()), 'BN-Baseline': ('bn_baseline', ()),
               'Inception, sigmoid': ('inception', (SIGMOID,))}
SEEDED = ('BN-x5-Sigmoid', 'Inception at BN-x5\'s rate', 'Inception, sigmoid')
LONG = ('Inception, 10 epochs', 'BN-Baseline, 10 epochs', 'BN-x5, 10 epochs',
        'BN-x30, 10 epochs')
LONG_SEEDED = ('Inception, 10 epochs', 'BN-Baseline, 10 epochs')
PARTS = ('same_code', 'controls', 'stable_rate', 'seeds', 'converged')   # priority order


def rate_label(base: str, multiple: float) -> str:
  """The grid's run of `base` at `multiple` x its base rate (1x is the plain model)."""
  return base if multiple == 1 else f'{base} at {multiple:g}x rate'


def variant(label: str) -> Variant:
  if label in VARIANTS:
    return VARIANTS[label]
  for base, (model, extra) in RATE_MODELS.items():
    prefix = f'{base} at '
    if label.startswith(prefix) and label.endswith('x rate'):
      multiple = float(label[len(prefix):-len('x rate')])
      rate = f'--config.optimizer.learning_rate={BASE_RATE * multiple:g}'
      return Variant(model, (*extra, rate))
  raise KeyError(label)


@dataclasses.dataclass(frozen=True)
class PartRun:
  label: str
  seed: int

  @property
  def slug(self) -> str:
    return f'{rp.slug(self.label)}_seed{self.seed}'


def part_runs(part: str, plan: PartsPlan) -> list[PartRun]:
  """The runs of one part, in the order they train: seed by seed."""
  first = plan.seeds[0]
  if part == 'same_code':
    return [PartRun('BN-x5, augmentation in tf.data', plan.same_code_seed),
            PartRun('BN-x5', plan.same_code_seed)]
  if part == 'controls':
    return [PartRun(label, seed) for seed in plan.seeds
            for label in CONTROL_PARENTS + RECIPE_CONTROLS]
  if part == 'stable_rate':
    return [PartRun(rate_label(base, m), first) for base in RATE_MODELS for m in plan.rate_grid]
  if part == 'seeds':
    return [PartRun(label, seed) for seed in plan.seeds for label in SEEDED]
  if part == 'converged':
    return ([PartRun(label, first) for label in LONG]
            + [PartRun(label, seed) for seed in plan.seeds[1:] for label in LONG_SEEDED])
  raise ValueError(f'unknown part {part!r}; the parts: {", ".join(PARTS)}')


def parse_parts(text: str) -> tuple[str, ...]:
  """'controls,seeds' (or 'all') -> the parts, in PARTS' priority order."""
  names = PARTS if text == 'all' else tuple(p.strip() for p in text.split(',') if p.strip())
  unknown = [p for p in names if p not in PARTS]
  if unknown or not names:
    raise SystemExit(f'--parts {text!r}: expected a comma-separated list of {", ".join(PARTS)} '
                     'or all')
  return tuple(p for p in PARTS if p in names)


def steps_of(run: PartRun, plan: PartsPlan) -> int:
  return plan.long_steps if variant(run.label).long else plan.twin_steps


def command(run: PartRun, plan: PartsPlan, dataset: str, workdir: str) -> list[str]:
  """The script and arguments that train `run` in `workdir`."""
  v = variant(run.label)
  every = plan.long_eval_every if v.long else plan.eval_every
  return ['scripts/train.py', '--config', rp.twin_config(dataset, v.model),
          '--workdir', workdir, f'--config.train_for={steps_of(run, plan)} steps',
          f'--config.seed={run.seed}', f'--config.data.eval_split={plan.eval_split}',
          f'--config.hooks.eval.every={every} steps',
          f'--config.hooks.eval_debiased.every={every} steps',
          f'--config.hooks.eval_population.every={every} steps',
          f'--config.hooks.eval_population.num_batches={plan.eval_population_batches}',
          *v.overrides]


def diverged(workdir: str) -> dict | None:
  """The record of a run that stopped on NaN/Inf ({step, message}), else None."""
  path = os.path.join(workdir, DIVERGED_FILE)
  if not os.path.exists(path):
    return None
  with open(path, encoding='utf-8') as f:
    return json.load(f)


def finished(workdir: str, steps: int) -> bool:
  """Whether the run is over: its results at `steps` or later, or a NaN/Inf stop."""
  results = Workdir(workdir).read_results() if os.path.isdir(workdir) else None
  return (results is not None and results['step'] >= steps) or diverged(workdir) is not None


def train_parts(runner: Runner, parts: tuple[str, ...], plan: PartsPlan, dataset: str,
                identity: dict, only_seeds: tuple[int, ...] | None = None) -> dict[PartRun, str]:
  """Trains the parts' runs not finished yet (each once, whichever parts share it); records
  each start's code identity in its workdir. Returns {run: workdir} of the finished runs."""
  done, seen = {}, set()
  for part in parts:
    for run in part_runs(part, plan):
      if run in seen or (only_seeds is not None and run.seed not in only_seeds):
        continue
      seen.add(run)
      workdir = runner.workdir(run)
      steps = steps_of(run, plan)
      skip = finished(workdir, steps)
      name = f'{run.label}, seed {run.seed}'
      if not skip and not runner.dry:
        code_identity.record_start(workdir, identity, code_identity.last_step(workdir))
      status = runner.command(name, *command(run, plan, dataset, workdir), skip=skip,
                              check=False)
      if status:
        record_divergence(name, workdir, runner.log(name), status)
      if finished(workdir, steps):
        done[run] = workdir
  return done


def record_divergence(name: str, workdir: str, log: str, status: int) -> None:
  """Writes the NaN/Inf stop the log reports; any other failure stops the reproduction."""
  with open(log, encoding='utf-8', errors='replace') as f:
    match = DIVERGED.search(f.read())
  if not match:
    raise SystemExit(f'{name} failed (exit {status}); see {log}')
  record = {'step': int(match.group(1)), 'message': match.group(0), 'log': log}
  with open(os.path.join(workdir, DIVERGED_FILE), 'w', encoding='utf-8') as f:
    json.dump(record, f, indent=1)
