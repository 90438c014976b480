"""train_and_evaluate(config, workdir): the config-driven training loop.

Re-running with the same workdir resumes from the latest checkpoint and
continues the same data order. SIGTERM saves a checkpoint and returns
normally. A non-finite loss or gradient stops the run within one step with
TrainingDiverged; the state was not updated by that step and nothing is
saved after it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time

import jax
import ml_collections
from absl import logging
from clu import periodic_actions

from bn_repro import device_map, evaluation, files, optim, steps
from bn_repro.checkpointing import Checkpoints, abstract_like, param_shapes
from bn_repro.errors import ConfigError, UserError, check_choice
from bn_repro.input_pipeline import pipeline
from bn_repro.input_pipeline.specs import image_shape
from bn_repro.metric_logging import create_writer
from bn_repro.models import build_model
from bn_repro.train_state import create_train_state

CONFIG_FILE = 'config.json'
TARGETS_FILE = 'targets.json'
RESULTS_FILE = 'results.json'


class TrainingDiverged(UserError):
  """The loss or the gradients stopped being finite."""


def validate_config(config) -> None:
  device_map.per_device_batch('global_batch_size', config.global_batch_size)
  device_map.per_device_batch('eval_batch_size', config.eval_batch_size)
  check_choice('eval_stats', config.eval_stats, ('ema',))
  if config.num_train_steps <= 0 and config.num_epochs <= 0:
    raise ConfigError('set num_train_steps or num_epochs (> 0)')
  if any(not 0 < t <= 1 for t in config.target_accuracies):
    raise ConfigError(f'target_accuracies={tuple(config.target_accuracies)} must be in (0, 1]')
  optim.validate(config.optimizer)


def duration_in_steps(config, name: str, steps_per_epoch: int) -> int:
  """config.<name>_steps if > 0, else config.<name>_epochs * steps_per_epoch (0: never)."""
  in_steps = config.get(f'{name}_steps', -1)
  if in_steps > 0:
    return int(in_steps)
  in_epochs = config.get(f'{name}_epochs', -1)
  return max(1, round(in_epochs * steps_per_epoch)) if in_epochs > 0 else 0


def load_config(workdir: str) -> ml_collections.ConfigDict:
  """The config a workdir was trained with."""
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path):
    raise UserError(f'{path} does not exist: is {workdir} a training workdir?')
  with open(path, encoding='utf-8') as f:
    return ml_collections.ConfigDict(json.load(f))


class TargetTracker:
  """First step at which eval top-1 reached each target (the paper's "steps to 72.2%")."""

  def __init__(self, workdir: str, targets):
    self.path = os.path.join(workdir, TARGETS_FILE)
    self.reached = {}
    if os.path.exists(self.path):
      with open(self.path, encoding='utf-8') as f:
        self.reached = json.load(f)['reached']
    self.targets = [float(t) for t in targets]

  def update(self, step: int, top1: float) -> list[float]:
    new = [t for t in self.targets if f'{t:g}' not in self.reached and top1 >= t]
    for t in new:
      self.reached[f'{t:g}'] = {'step': step, 'eval_top1': top1}
    if new:
      files.write_json(self.path, {'targets': self.targets, 'reached': self.reached})
    return new


@contextlib.contextmanager
def sigterm_flag():
  """An Event set on SIGTERM while inside the block (main thread, one process only:
  with several, JAX's own preemption notifier handles SIGTERM)."""
  event = threading.Event()
  if (threading.current_thread() is not threading.main_thread()
      or device_map.process_count() > 1):
    yield event
    return
  previous = signal.signal(signal.SIGTERM, lambda *_: event.set())
  try:
    yield event
  finally:
    signal.signal(signal.SIGTERM, previous)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains `config` in `workdir` (resuming if it holds a checkpoint); returns the final results."""
  start_time = time.time()
  validate_config(config)
  shape = image_shape(config.data)
  model = build_model(config.model, image_size=shape[0], sync_bn=True)
  source = pipeline.Source(config.data)
  train_data = pipeline.TrainData(source, global_batch=config.global_batch_size,
                                  seed=config.seed)
  eval_data = pipeline.EvalData(source, global_batch=config.eval_batch_size)
  steps_per_epoch = train_data.steps_per_epoch
  num_steps = (config.num_train_steps if config.num_train_steps > 0
               else max(1, round(config.num_epochs * steps_per_epoch)))
  eval_every = duration_in_steps(config, 'eval_every', steps_per_epoch)
  schedule = optim.learning_rate_schedule(config.optimizer, steps_per_epoch)
  tx = optim.make_optimizer(config.optimizer, steps_per_epoch)

  os.makedirs(workdir, exist_ok=True)
  checkpoints = Checkpoints(workdir, keep=config.keep_checkpoints)
  replicated = device_map.replicated_sharding()
  latest = checkpoints.latest_step()
  if latest is not None:
    abstract_state = jax.eval_shape(lambda: create_train_state(model, tx, shape, config.seed))
    state, meta = checkpoints.restore(latest, abstract_like(abstract_state, replicated))
    if meta['global_batch_size'] != config.global_batch_size or meta['seed'] != config.seed:
      logging.warning('resuming with another global batch or seed than the checkpoint '
                      '(%s); the data order will differ from an uninterrupted run',
                      {k: meta[k] for k in ('global_batch_size', 'seed')})
    logging.info('Resumed from %s', checkpoints.path(latest))
  else:
    state = create_train_state(model, tx, shape, config.seed, sharding=replicated)
  files.write_json(os.path.join(workdir, CONFIG_FILE), json.loads(config.to_json_best_effort()))

  start_step = int(device_map.to_host(state.step))
  device_map.check_same_on_all_processes('config', config.to_json_best_effort(sort_keys=True))
  device_map.check_same_on_all_processes('start step', str(start_step))
  per_device = config.global_batch_size // device_map.device_count()
  logging.info('%s: %d devices on %d processes, global batch %d (%d per device), '
               '%d steps per epoch, training steps %d -> %d', config.name,
               device_map.device_count(), device_map.process_count(),
               config.global_batch_size, per_device, steps_per_epoch, start_step, num_steps)

  meta = {'config': json.loads(config.to_json_best_effort()),
          'param_shapes': param_shapes(state.params),
          'global_batch_size': config.global_batch_size, 'seed': config.seed,
          'steps_per_epoch': steps_per_epoch}
  writer = create_writer(workdir)
  train_step = steps.make_train_step(
      model, tx, schedule, source.spec, average_ema=config.model.bn.group_size != 0)
  eval_step = steps.make_eval_step(model, source.spec, stats=config.eval_stats)
  targets = TargetTracker(workdir, config.target_accuracies)
  progress = periodic_actions.ReportProgress(num_train_steps=num_steps, writer=writer,
                                             every_steps=config.log_every_steps)

  def save(step: int):
    checkpoints.save(step, state, dict(meta, step=step))

  population_eval = _population_evaluator(config, model, source)

  def run_eval(step: int) -> evaluation.EvalResult:
    result = evaluation.evaluate(eval_step, state.variables(), eval_data)
    writer.write_scalars(step, result.metrics())
    if population_eval:
      writer.write_scalars(step, population_eval(state, eval_data).metrics('eval_population_'))
    for t in targets.update(step, result.top1):
      logging.info('step %d: eval top-1 %.4f reached the target %g', step, result.top1, t)
    return result

  probe = _make_probe(config, workdir, model, source, shape)
  if probe and probe.due(start_step):
    probe.record(start_step, state.variables())

  batches = pipeline.prefetch_to_devices(train_data.batches(start_step),
                                         config.data.prefetch)
  pending = []          # device metrics of the steps since the last log
  step = start_step
  with sigterm_flag() as sigterm:
    while step < num_steps:
      if device_map.stop_requested(sigterm):
        save(step)
        checkpoints.wait()
        logging.info('SIGTERM: saved a checkpoint at step %d; exiting', step)
        writer.flush()
        return {'step': step, 'interrupted': True}
      state, metrics = train_step(state, next(batches))
      pending.append(metrics)
      step += 1
      if config.check_finite_every_steps > 0 and (
          len(pending) > 1 and step % config.check_finite_every_steps == 0):
        # The previous step's flag: the current step is already queued behind it.
        if not bool(device_map.to_host(pending[-2]['finite'])):
          _stop_diverged(step - 1, pending[-2], checkpoints)
      progress(step)
      if probe and probe.due(step):
        probe.record(step, state.variables())
      if step % config.log_every_steps == 0 or step == num_steps:
        host = device_map.to_host(pending)
        for offset, m in enumerate(host):
          if not m['finite']:
            _stop_diverged(step - len(host) + offset + 1, m, checkpoints)
        writer.write_scalars(step, {
            'train_loss': sum(float(m['loss']) for m in host) / len(host),
            'train_top1': sum(float(m['top1']) for m in host) / len(host),
            'learning_rate': float(host[-1]['learning_rate'])})
        pending = []
      if eval_every and step % eval_every == 0 and step != num_steps:
        run_eval(step)
      if step % config.checkpoint_every_steps == 0 and step != num_steps:
        save(step)

  last_result = run_eval(step)
  if step != start_step or latest is None:
    save(step)
  checkpoints.wait()
  writer.flush()
  results = {
      'name': config.name, 'step': step, 'stats': config.eval_stats,
      'eval_split': eval_data.split, **last_result.metrics(),
      'targets_reached': targets.reached,
      'wall_seconds_this_run': round(time.time() - start_time, 1),
  }
  files.write_json(os.path.join(workdir, RESULTS_FILE), results)
  logging.info('RESULT %s: step %d, %s top-1 %.4f (top-5 %.4f) on %d examples, '
               '%s BN statistics', config.name, step, eval_data.split, last_result.top1,
               last_result.top5, last_result.count, config.eval_stats.upper())
  return results


def _population_evaluator(config, model, source):
  """With config.eval_population_batches > 0 (and BN): a function that recomputes
  population statistics (Algorithm 2, over the next that many batches of one
  fixed-seed stream of training batches) and evaluates with them, so training
  curves exist for both kinds of BN statistics. The moments step compiles once."""
  num_batches = config.get('eval_population_batches', 0)
  if not num_batches or not config.model.batch_norm:
    return None
  from bn_repro import population_stats
  eval_step = steps.make_eval_step(model, source.spec, stats='population')
  moments_step = population_stats.make_moments_step(model, source.spec)
  batches = None  # one stream of training batches (fixed seed), opened at first use

  def evaluate(state, eval_data):
    nonlocal batches
    if batches is None:
      batches = pipeline.prefetch_to_devices(pipeline.TrainData(
          source, global_batch=config.global_batch_size, seed=config.seed + 1).batches(0),
          config.data.prefetch)
    stats, _, _ = population_stats.compute(model, state.variables(), source.spec, batches,
                                           num_batches, step=moments_step)
    variables = state.variables(device_map.replicate(stats))
    return evaluation.evaluate(eval_step, variables, eval_data)

  return evaluate


def _make_probe(config, workdir, model, source, shape):
  """The internal-covariate-shift probe when config.probe names layers, else None."""
  layers = list(config.probe.layers)
  if not layers:
    return None
  from bn_repro import ics_probe
  host_model = build_model(config.model, image_size=shape[0])
  ics_probe.check_layers(layers, ics_probe.unit_layers(host_model, shape))
  device_map.per_device_batch('probe.batch_size', config.probe.batch_size)
  probe_data = pipeline.EvalData(source, global_batch=config.probe.batch_size)
  first = next(iter(probe_data.batches()))
  return ics_probe.Probe(workdir, model, source.spec, layers,
                         {k: first[k] for k in ('image', 'label')} | {'mask': first['mask']},
                         every_steps=config.probe.every_steps, unit=config.probe.unit)


def _stop_diverged(step: int, metrics, checkpoints: Checkpoints):
  checkpoints.wait()
  last = checkpoints.latest_step()
  lr = float(device_map.to_host(metrics['learning_rate']))
  raise TrainingDiverged(
      f'loss or gradients became NaN/Inf at step {step} (learning rate {lr:g}); '
      f'the state was not updated; the last checkpoint '
      f'({"step " + str(last) if last is not None else "none"}) is intact')
