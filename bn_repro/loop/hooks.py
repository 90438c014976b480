"""Periodic work during training, as data: `config.hooks` names each hook, its kind and cadence.

  config.hooks.eval = dict(kind='evaluate', stats='ema', every='1 epochs')
  config.hooks.checkpoint = dict(kind='checkpoint', every='2000 steps', keep=3)

Kinds (their options are below, in KINDS):
- evaluate:   exact evaluation of the eval split with the EMA ('ema'), the
              debiased EMA ('ema_debiased') or population statistics freshly
              computed over `num_batches` training batches ('population');
              writes <name>_top1, <name>_top5, <name>_loss, ...
- ics_probe:  the internal-covariate-shift probe on chosen layers;
- targets:    the first step at which a metric reached each target value
              (the paper's "steps to 72.2%");
- checkpoint: saves the train state.
A cadence `every` is a duration ('500 steps', '0.5 epochs'), 'end' or 'never'
(off). Evaluations and checkpoints also run when training ends; the probe also
runs before the first step. Hooks run in the order of KINDS, so a target sees
the evaluations of its step and a checkpoint comes last.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

from absl import logging

from bn_repro import faults, files
from bn_repro.data import pipeline
from bn_repro.data.on_device import Augmentation
from bn_repro.errors import ConfigError, check_choice
from bn_repro.evaluation import exact, population
from bn_repro.models.batchnorm import EVAL_STATISTICS
from bn_repro.parallel import device_map
from bn_repro.evaluation import ics_probe
from bn_repro.training import durations
from bn_repro.training.checkpoints import Checkpoints
from bn_repro.training.recipes import TrainingRecipe
from bn_repro.training.state import eval_variables
from bn_repro.workdir import Workdir, write_json



@dataclasses.dataclass
class HookContext:
  """What hooks may use; built once per run by the loop."""
  config: Any
  workdir: Workdir
  recipe: TrainingRecipe
  source: pipeline.Source
  checkpoints: Checkpoints
  checkpoint_meta: Callable[[int], dict]   # step -> the 'meta' item of a checkpoint
  start_step: int
  _eval_data: pipeline.EvalData | None = None

  @property
  def eval_data(self) -> pipeline.EvalData:
    """The eval split in global batches of config.eval_batch_size (shared by all evaluations)."""
    if self._eval_data is None:
      self._eval_data = pipeline.EvalData(self.source, global_batch=self.config.eval_batch_size)
    return self._eval_data


class Hook:
  """One named piece of periodic work. Subclasses set `runs_at_start` / `runs_at_end`
  and implement __call__(step, state, outputs) -> metrics to write (may be {}).
  A stop signal may skip an `interruptible` hook (the state is saved instead)."""
  runs_at_start = False
  runs_at_end = False
  interruptible = False

  def __init__(self, name: str, every_steps: int, at_end_only: bool):
    self.name = name
    self.every_steps = every_steps
    self.at_end_only = at_end_only

  def due(self, step: int, *, final: bool = False) -> bool:
    periodic = bool(self.every_steps) and step % self.every_steps == 0
    return periodic or (final and (self.runs_at_end or self.at_end_only))

  def __call__(self, step: int, state, outputs: dict) -> dict:
    raise NotImplementedError

  def summary(self) -> dict:
    """What the hook adds to the run's results."""
    return {}

  def close(self) -> None:
    pass


class EvaluateHook(Hook):
  runs_at_end = True
  interruptible = True

  def __init__(self, name, every_steps, at_end_only, ctx: HookContext, *, stats: str,
               num_batches: int = 0):
    super().__init__(name, every_steps, at_end_only)
    self.ctx = ctx
    self.stats = stats
    self.num_batches = num_batches
    self._population_batches = None   # one stream of training batches, opened at first use
    self._moments_step = None

  def _population_stats(self, state):
    """Algorithm 2 over the next num_batches batches of one fixed-seed training stream."""
    recipe = self.ctx.recipe
    if self._population_batches is None:
      stream = pipeline.TrainData(self.ctx.source, global_batch=self.ctx.config.global_batch_size,
                                  seed=self.ctx.config.seed + 1)
      self._population_batches = device_map.prefetch(stream.batches(0),
                                                     self.ctx.config.data.prefetch)
      self._moments_step = population.make_moments_step(
          recipe.model, recipe.spec, Augmentation.from_config(self.ctx.config.data),
          self.ctx.config.seed + 1)
    stats, _, _ = population.compute(recipe.model, state.variables(), recipe.spec,
                                     self._population_batches, self.num_batches,
                                     step=self._moments_step)
    return device_map.replicate(stats)

  def __call__(self, step, state, outputs):
    faults.point('evaluate', step)
    population_stats = self._population_stats(state) if self.stats == 'population' else None
    variables = eval_variables(state.model_part(), self.stats, step=state.step,
                               momentum=self.ctx.config.model.bn.momentum,
                               population_stats=population_stats)
    evaluation = exact.evaluate(self.ctx.recipe.eval_step(self.stats), variables,
                                self.ctx.eval_data)
    return evaluation.result.metrics(prefix=f'{self.name}_')


class ProbeHook(Hook):
  runs_at_start = True
  interruptible = True

  def __init__(self, name, every_steps, at_end_only, ctx: HookContext, *, layers, batch_size: int,
               unit: int):
    super().__init__(name, every_steps, at_end_only)
    recipe = ctx.recipe
    ics_probe.check_layers(layers, ics_probe.unit_layers(recipe.model, recipe.image_shape))
    probe_data = pipeline.EvalData(ctx.source, global_batch=batch_size)
    first = next(iter(probe_data.batches()))
    self.probe = ics_probe.Probe(ctx.workdir, recipe.model, recipe.spec, layers,
                                 {k: first[k] for k in ('image', 'label', 'mask')}, unit=unit)

  def __call__(self, step, state, outputs):
    if not self.probe.has_record(step):
      self.probe.record(step, state.variables())
    return {}


class TargetsHook(Hook):
  """Watches `metric` in the outputs of the hooks before it; records the first step at
  which it reached each value in Workdir.targets_file. A resumed run rebuilds what was
  reached from the metrics logged up to its start."""

  def __init__(self, name, every_steps, at_end_only, ctx: HookContext, *, metric: str, values):
    super().__init__(name, 1, at_end_only)
    self.metric = metric
    self.path = ctx.workdir.targets_file
    self.values = [float(v) for v in values]
    self.reached = {}
    if ctx.start_step and files.exists(ctx.workdir.metrics_file):
      for record in ctx.workdir.read_metrics():
        self._update(record['step'], record)

  def _update(self, step: int, outputs: dict) -> list[float]:
    if self.metric not in outputs:
      return []
    value = outputs[self.metric]
    new = [t for t in self.values if f'{t:g}' not in self.reached and value >= t]
    for t in new:
      self.reached[f'{t:g}'] = {'step': step, self.metric: value}
    return new

  def __call__(self, step, state, outputs):
    new = self._update(step, outputs)
    for t in new:
      logging.info('step %d: %s %.4f reached the target %g', step, self.metric,
                   outputs[self.metric], t)
    if new:
      write_json(self.path, {'metric': self.metric, 'targets': self.values,
                             'reached': self.reached})
    return {}

  def summary(self):
    return {'targets_reached': self.reached}


class CheckpointHook(Hook):
  runs_at_end = True

  def __init__(self, name, every_steps, at_end_only, ctx: HookContext, *, keep: int):
    super().__init__(name, every_steps, at_end_only)
    del keep   # the loop opens the checkpoint manager with it
    self.ctx = ctx
    self.last_saved = ctx.checkpoints.latest_step()

  def __call__(self, step, state, outputs):
    if step != self.last_saved:
      self.ctx.checkpoints.save(step, state, self.ctx.checkpoint_meta(step))
      self.last_saved = step
    return {}

  def close(self):
    self.ctx.checkpoints.wait()


REQUIRED = object()


@dataclasses.dataclass(frozen=True)
class Kind:
  hook: type
  options: dict            # option -> (check(field, value), default or REQUIRED)
  has_cadence: bool = True

  def resolved_options(self, spec) -> dict:
    return {name: spec.get(name, default) for name, (_, default) in self.options.items()}


def _stats(field, value):
  check_choice(field, value, EVAL_STATISTICS)


def _non_negative_int(field, value):
  if not isinstance(value, int) or value < 0:
    raise ConfigError(f'{field}={value!r} must be an integer >= 0')


def _positive_int(field, value):
  if not isinstance(value, int) or value < 1:
    raise ConfigError(f'{field}={value!r} must be an integer >= 1')


def _global_batch(field, value):
  device_map.per_device_batch(field, value)


def _layers(field, value):
  if not isinstance(value, (tuple, list)) or not all(isinstance(v, str) for v in value):
    raise ConfigError(f'{field}={value!r} must be a tuple of layer names')


def _target_values(field, value):
  if not isinstance(value, (tuple, list)) or any(not 0 < v <= 1 for v in value):
    raise ConfigError(f'{field}={value!r} must be a tuple of values in (0, 1]')


def _text(field, value):
  if not isinstance(value, str) or not value:
    raise ConfigError(f'{field}={value!r} must be a metric name')


# In the order hooks run within a step.
KINDS = {
    'evaluate': Kind(EvaluateHook, {'stats': (_stats, 'ema'),
                                    'num_batches': (_non_negative_int, 0)}),
    'ics_probe': Kind(ProbeHook, {'layers': (_layers, REQUIRED),
                                  'batch_size': (_global_batch, REQUIRED),
                                  'unit': (_non_negative_int, 0)}),
    'targets': Kind(TargetsHook, {'metric': (_text, 'eval_top1'),
                                  'values': (_target_values, REQUIRED)}, has_cadence=False),
    'checkpoint': Kind(CheckpointHook, {'keep': (_positive_int, 3)}),
}


def validate(hooks_config) -> None:
  """Every hook's kind, options and cadence, as one-line ConfigErrors."""
  for name, spec in hooks_config.items():
    field = f'hooks.{name}'
    if 'kind' not in spec:
      raise ConfigError(f'{field} has no kind; kinds: {", ".join(KINDS)}')
    check_choice(f'{field}.kind', spec['kind'], tuple(KINDS))
    kind = KINDS[spec['kind']]
    allowed = set(kind.options) | {'kind'} | ({'every'} if kind.has_cadence else set())
    unknown = sorted(set(spec) - allowed)
    if unknown:
      raise ConfigError(f'{field}.{unknown[0]} is not an option of a {spec["kind"]} hook; '
                        f'options: {", ".join(sorted(allowed))}')
    options = kind.resolved_options(spec)
    missing = sorted(k for k, v in options.items() if v is REQUIRED)
    if kind.has_cadence and 'every' not in spec:
      missing.append('every')
    if missing:
      raise ConfigError(f'{field} needs {", ".join(missing)}')
    for option, (check, _) in kind.options.items():
      check(f'{field}.{option}', options[option])
    every = durations.parse_cadence(f'{field}.every', spec['every']) if kind.has_cadence else None
    if spec['kind'] == 'evaluate' and options['stats'] == 'population' and \
        options['num_batches'] < 2:
      raise ConfigError(f'{field}.num_batches={options["num_batches"]} must be >= 2 for '
                        'population statistics')
    if spec['kind'] == 'ics_probe' and not options['layers'] and every != durations.NEVER:
      raise ConfigError(f'{field}.layers is empty: name the layers to probe, or set '
                        f"{field}.every='never'")


def build_hooks(ctx: HookContext) -> list[Hook]:
  """The enabled hooks of ctx.config.hooks, in running order."""
  hooks = []
  for kind_name, kind in KINDS.items():
    for name, spec in ctx.config.hooks.items():
      if spec['kind'] != kind_name:
        continue
      cadence = (durations.parse_cadence(f'hooks.{name}.every', spec['every'])
                 if kind.has_cadence else durations.Duration(1, 'steps'))
      if cadence == durations.NEVER:
        continue
      options = kind.resolved_options(spec)
      if kind_name == 'evaluate' and options['stats'] != 'ema' and \
          not ctx.config.model.batch_norm:
        logging.info('hooks.%s: %s has no BatchNorm, so no %s statistics: skipped', name,
                     ctx.config.name, options['stats'])
        continue
      hooks.append(kind.hook(name, durations.cadence_in_steps(cadence, ctx.recipe.steps_per_epoch),
                             cadence == durations.END, ctx, **options))
  return hooks
