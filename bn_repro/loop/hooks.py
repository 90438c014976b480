"""Periodic work during training, as data: `config.hooks` names each hook, its kind and cadence.

  config.hooks.eval = dict(kind='evaluate', statistics='ema', every='1 epochs')
  config.hooks.checkpoint = dict(kind='checkpoint', every='2000 steps', keep=3)

Kinds (each hook class declares and checks its own options; KINDS lists them):
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
from bn_repro.data.sources import InputSource
from bn_repro.data.on_device import Augmentation
from bn_repro.errors import ConfigError, check_choice
from bn_repro.evaluation import exact, ics_probe, population
from bn_repro.models.batchnorm import EVAL_STATISTICS
from bn_repro.parallel import device_map
from bn_repro.training import durations
from bn_repro.training.checkpoints import Checkpoints
from bn_repro.training.recipes import TrainingRecipe
from bn_repro.training.state import eval_variables
from bn_repro.workdir import Workdir, write_json_on_process_0



@dataclasses.dataclass
class HookContext:
  """What hooks may use; built once per run by the loop."""
  config: Any
  workdir: Workdir
  recipe: TrainingRecipe
  source: InputSource
  checkpoints: Checkpoints
  checkpoint_meta: Callable[[int], dict]   # step -> the 'meta' item of a checkpoint
  start_step: int
  _eval_data: Any = None

  @property
  def eval_data(self):
    """The eval split in global batches of config.eval_batch_size (shared by all evaluations)."""
    if self._eval_data is None:
      self._eval_data = self.source.eval_data(global_batch=self.config.eval_batch_size)
    return self._eval_data


REQUIRED = object()


def _statistics(field, value):
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


class Hook:
  """One named piece of periodic work. A kind (subclass) declares its `options`
  ({option: (check(field, value), default or REQUIRED)}), checks their combinations in
  `check`, may decline a config in `skipped_because`, sets `runs_at_start` / `runs_at_end`
  and implements __call__(step, state, outputs) -> metrics to write (may be {}).
  A stop signal may skip an `interruptible` hook (the state is saved instead)."""
  options: dict = {}
  has_cadence = True
  runs_at_start = False
  runs_at_end = False
  interruptible = False

  def __init__(self, name: str, every_steps: int, at_end_only: bool):
    self.name = name
    self.every_steps = every_steps
    self.at_end_only = at_end_only

  @classmethod
  def resolved_options(cls, spec) -> dict:
    return {name: spec.get(name, default) for name, (_, default) in cls.options.items()}

  @classmethod
  def check(cls, field: str, options: dict, every) -> None:
    """Rules across this kind's options and its cadence, as one-line ConfigErrors."""

  @classmethod
  def skipped_because(cls, config, options: dict) -> str | None:
    """Why this hook does nothing for `config` (it is then not built), or None."""
    return None

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
  options = {'statistics': (_statistics, 'ema'), 'num_batches': (_non_negative_int, 0)}
  runs_at_end = True
  interruptible = True

  def __init__(self, name, every_steps, at_end_only, ctx: HookContext, *, statistics: str,
               num_batches: int = 0):
    super().__init__(name, every_steps, at_end_only)
    self.ctx = ctx
    self.statistics = statistics
    self.num_batches = num_batches
    self.eval_data = ctx.eval_data   # opened now: a missing split fails before training
    self._population_batches = None   # one stream of training batches, opened at first use
    self._moments_step = None

  @classmethod
  def check(cls, field, options, every):
    if options['statistics'] == 'population' and options['num_batches'] < 2:
      raise ConfigError(f'{field}.num_batches={options["num_batches"]} must be >= 2 for '
                        'population statistics')

  @classmethod
  def skipped_because(cls, config, options):
    if options['statistics'] != 'ema' and not config.model.batch_norm:
      return f'{config.name} has no BatchNorm, so no {options["statistics"]} statistics'
    return None

  def _population_stats(self, state):
    """Algorithm 2 over the next num_batches batches of one fixed-seed training stream."""
    recipe = self.ctx.recipe
    if self._population_batches is None:
      stream = self.ctx.source.train_data(global_batch=self.ctx.config.global_batch_size,
                                          seed=self.ctx.config.seed + 1)
      self._population_batches = device_map.prefetch(stream.batches(0),
                                                     self.ctx.config.data.prefetch)
      self._moments_step = population.make_moments_step(
          recipe.model, recipe.spec, Augmentation.from_config(self.ctx.config.data),
          self.ctx.config.seed + 1)
    stats = population.compute(recipe.model, state.variables(), recipe.spec,
                               self._population_batches, self.num_batches,
                               step=self._moments_step).stats
    return device_map.replicate(stats)

  def __call__(self, step, state, outputs):
    faults.point('evaluate', step)
    population_stats = self._population_stats(state) if self.statistics == 'population' else None
    variables = eval_variables(state.model_part(), self.statistics, step=state.step,
                               momentum=self.ctx.config.model.bn.momentum,
                               population_stats=population_stats)
    evaluation = exact.evaluate(self.ctx.recipe.eval_step(self.statistics), variables,
                                self.eval_data)
    return evaluation.result.metrics(prefix=f'{self.name}_')


class ProbeHook(Hook):
  options = {'layers': (_layers, REQUIRED), 'batch_size': (_global_batch, REQUIRED),
             'unit': (_non_negative_int, 0)}
  runs_at_start = True
  interruptible = True

  def __init__(self, name, every_steps, at_end_only, ctx: HookContext, *, layers, batch_size: int,
               unit: int):
    super().__init__(name, every_steps, at_end_only)
    recipe = ctx.recipe
    ics_probe.check_layers(layers, ics_probe.unit_layers(recipe.model, recipe.image_shape))
    probe_data = ctx.source.eval_data(global_batch=batch_size)
    first = next(iter(probe_data.batches()))
    self.probe = ics_probe.Probe(ctx.workdir, recipe.model, recipe.spec, layers,
                                 {k: first[k] for k in ('image', 'label', 'mask')}, unit=unit)

  @classmethod
  def check(cls, field, options, every):
    if not options['layers'] and every != durations.NEVER:
      raise ConfigError(f'{field}.layers is empty: name the layers to probe, or set '
                        f"{field}.every='never'")

  def __call__(self, step, state, outputs):
    if not self.probe.has_record(step):
      self.probe.record(step, state.variables())
    return {}


class TargetsHook(Hook):
  """Watches `metric` in the outputs of the hooks before it; records the first step at
  which it reached each value in Workdir.targets_file. A resumed run rebuilds what was
  reached from the metrics logged up to its start."""
  options = {'metric': (_text, 'eval_top1'), 'values': (_target_values, REQUIRED)}
  has_cadence = False   # it looks at every step's outputs

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
      write_json_on_process_0(self.path, {'metric': self.metric, 'targets': self.values,
                                          'reached': self.reached})
    return {}

  def summary(self):
    return {'targets_reached': self.reached}


class CheckpointHook(Hook):
  """Saves the train state. A run has exactly one (its `keep` is the checkpoints' retention,
  which the loop reads through checkpoint_options)."""
  options = {'keep': (_positive_int, 3)}
  runs_at_end = True

  def __init__(self, name, every_steps, at_end_only, ctx: HookContext, *, keep: int):
    super().__init__(name, every_steps, at_end_only)
    del keep   # the loop opens the checkpoint manager with it
    self.ctx = ctx

  def __call__(self, step, state, outputs):
    self.ctx.checkpoints.save(step, state, self.ctx.checkpoint_meta(step))   # once per step
    return {}

  def close(self):
    self.ctx.checkpoints.wait()


# The kinds, in the order hooks run within a step.
KINDS = {'evaluate': EvaluateHook, 'ics_probe': ProbeHook, 'targets': TargetsHook,
         'checkpoint': CheckpointHook}


def validate(hooks_config) -> None:
  """Every hook's kind, options and cadence, as one-line ConfigErrors; exactly one checkpoint
  hook."""
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
    kind.check(field, options, every)
  checkpoint_options(hooks_config)


def checkpoint_options(hooks_config) -> dict:
  """The resolved options of the run's one checkpoint hook (found by its kind)."""
  names = [name for name, spec in hooks_config.items() if spec.get('kind') == 'checkpoint']
  if len(names) != 1:
    raise ConfigError(f'config.hooks needs exactly one hook of kind checkpoint, has '
                      f'{len(names)}{" (" + ", ".join(names) + ")" if names else ""}')
  return CheckpointHook.resolved_options(hooks_config[names[0]])


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
      reason = kind.skipped_because(ctx.config, options)
      if reason:
        logging.info('hooks.%s: %s: skipped', name, reason)
        continue
      hooks.append(kind(name, durations.cadence_in_steps(cadence, ctx.recipe.steps_per_epoch),
                        cadence == durations.END, ctx, **options))
  return hooks
