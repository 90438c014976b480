"""train_and_evaluate(config, workdir): the config-driven training loop.

Re-running with the same workdir resumes from the newest intact checkpoint
and continues the same data order; a workdir holds one run, so resuming with
a config that trains something else is refused unless asked for. SIGTERM or
SIGINT saves a checkpoint and raises TrainingInterrupted. A non-finite loss
or gradient stops the run with TrainingDiverged; the state was not updated by
that step and nothing is saved after it. Everything periodic (evaluations,
the probe, target tracking, checkpoints) is a hook configured in
`config.hooks`.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time

import ml_collections
from absl import logging

from bn_repro import faults
from bn_repro.data import sources
from bn_repro.errors import ConfigError, Interrupted, UserError
from bn_repro.loop import config_checks
from bn_repro.loop.hooks import HookContext, build_hooks, checkpoint_options
from bn_repro.loop.progress import Progress
from bn_repro.parallel import device_map
from bn_repro.training import durations, optim, recipes
from bn_repro.training.checkpoints import Checkpoints, param_shapes
from bn_repro.training.identity import identity_difference
from bn_repro.training.metric_writers import create_writer
from bn_repro.workdir import Workdir, write_json_on_process_0


class TrainingDiverged(UserError):
  """The loss or the gradients stopped being finite."""


class TrainingInterrupted(Interrupted):
  """A signal (SIGTERM, SIGINT) or the cluster's preemption notice stopped training after a
  checkpoint."""

  def __init__(self, step: int, signal_name: str):
    super().__init__(f'{signal_name}: saved a checkpoint at step {step}; run the same command '
                     'to resume')
    self.step = step
    self.signal_name = signal_name


class StopSignals:
  """Records SIGTERM and SIGINT while inside the block (main thread), each with one log line.

  One process handles both itself. With several, JAX's preemption notifier owns SIGTERM
  and brings every process to the same stop step; a SIGINT on any process is passed to
  that notifier as a SIGTERM of its own, so a Ctrl-C stops them all at one step too (the
  process that saw the SIGINT still exits as interrupted).
  """

  def __init__(self):
    self.received = None
    self._event = threading.Event()

  def _handle(self, number, _):
    name = signal.Signals(number).name
    if self.received is None:
      logging.warning('%s received: saving a checkpoint and stopping after this step', name)
    self.received = self.received or name
    self._event.set()
    if device_map.process_count() > 1 and number == signal.SIGINT:
      os.kill(os.getpid(), signal.SIGTERM)     # to JAX's preemption notifier

  @contextlib.contextmanager
  def catching(self):
    if threading.current_thread() is not threading.main_thread():
      yield self
      return
    wanted = [signal.SIGINT] + ([signal.SIGTERM] if device_map.process_count() == 1 else [])
    previous = {s: signal.signal(s, self._handle) for s in wanted}
    try:
      yield self
    finally:
      for s, handler in previous.items():
        signal.signal(s, handler)

  def stop_requested(self) -> bool:
    """Whether to save and stop now, the same decision on every process."""
    if device_map.stop_requested(self._event):
      if self.received is None:
        logging.warning('preemption notice (SIGTERM) received by the run: saving a checkpoint '
                        'and stopping')
      self.received = self.received or 'SIGTERM'
      return True
    return False


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       allow_config_change: bool = False) -> dict:
  """Trains `config` in `workdir` (resuming if it holds a checkpoint); returns the final results.

  allow_config_change: continue a workdir whose config differs in what it trains
  (the old config goes to the workdir's config history).
  """
  start_time = time.time()
  config_checks.validate(config)
  run_dir = Workdir(workdir)
  run_dir.create()
  with run_dir.lock():
    changed = _check_identity(run_dir, config, allow_config_change)
    checkpoints = Checkpoints(run_dir.checkpoint_dir,
                              keep=checkpoint_options(config.hooks)['keep'])
    try:
      return _train(config, run_dir, changed, checkpoints, start_time)
    except BaseException:
      # Whatever stops the run, a checkpoint still being written is finished, not abandoned.
      checkpoints.finish_in_flight_save()
      raise


def _check_identity(run_dir: Workdir, config, allow_change: bool) -> str:
  """'' when the workdir's config trains the same thing (or there is none), else the
  difference, which only allow_change lets through."""
  saved = run_dir.saved_config()
  difference = identity_difference(saved, config) if saved else None
  if difference and not allow_change:
    raise ConfigError(
        f'{run_dir.path} holds a run of another config ({difference}); use another --workdir, '
        'or pass --allow_config_change to continue this one with the new config')
  if difference:
    logging.warning('continuing %s with a changed config (%s)', run_dir.path, difference)
  return difference or ''


def _train(config, run_dir: Workdir, changed: str, checkpoints: Checkpoints,
           start_time: float) -> dict:
  source = sources.open_source(config.data)
  train_data = source.train_data(global_batch=config.global_batch_size, seed=config.seed)
  steps_per_epoch = train_data.steps_per_epoch
  recipe = recipes.for_training(config, steps_per_epoch)
  num_steps = durations.parse('train_for', config.train_for).steps(steps_per_epoch)
  log_every = durations.parse('log_every', config.log_every).steps(steps_per_epoch)
  check_finite_every = durations.parse('check_finite_every', config.check_finite_every,
                                       allow_zero=True).steps(steps_per_epoch)
  restored = checkpoints.restore_latest_intact(recipe.abstract_state())
  trained_with = None   # the config of the checkpoint resumed from
  if restored is not None:
    state, saved_meta = restored
    trained_with = ml_collections.ConfigDict(saved_meta['config'])
    if (saved_meta['global_batch_size'] != config.global_batch_size
        or saved_meta['seed'] != config.seed):
      logging.warning('resuming with another global batch or seed than the checkpoint '
                      '(%s); the data order will differ from an uninterrupted run',
                      {k: saved_meta[k] for k in ('global_batch_size', 'seed')})
    logging.info('Resumed from %s', checkpoints.path(saved_meta['step']))
  else:
    state = recipe.init_state()

  start_step = int(device_map.to_host(state.step))
  device_map.check_same_on_all_processes('config', config.to_json_best_effort(sort_keys=True))
  device_map.check_same_on_all_processes('start step', str(start_step))
  if start_step >= num_steps and trained_with is not None:
    difference = identity_difference(trained_with, config)
    if difference:
      # Evaluating the checkpoint as the changed network would describe no real model.
      logging.warning('nothing to train: checkpoint %d is the end of the run (train_for) and '
                      'was trained with another config (%s); nothing was evaluated and %s is '
                      'unchanged: evaluate the checkpoint with scripts/evaluate.py (which uses '
                      'its own config), or raise train_for to train on with the new config',
                      start_step, difference, run_dir.results_file)
      return run_dir.read_results() or {'name': config.name, 'step': start_step}
  run_dir.keep_metrics_up_to(start_step)   # what a crash left beyond the checkpoint is redone
  per_device = config.global_batch_size // device_map.device_count()
  logging.info('%s: %d devices on %d processes, global batch %d (%d per device), BN statistics '
               'over %s (%d examples), %d steps per epoch, training steps %d -> %d, peak '
               'learning rate %g', config.name, device_map.device_count(),
               device_map.process_count(), config.global_batch_size, per_device,
               recipe.bn_groups.describe(), per_device * recipe.bn_groups.size, steps_per_epoch,
               start_step, num_steps,
               optim.peak_learning_rate(config.optimizer, config.global_batch_size))

  config_json = json.loads(config.to_json_best_effort())
  shapes = param_shapes(state.params)

  def checkpoint_meta(step: int) -> dict:
    return {'config': config_json, 'param_shapes': shapes, 'step': step,
            'global_batch_size': config.global_batch_size, 'seed': config.seed,
            'steps_per_epoch': steps_per_epoch}

  ctx = HookContext(config=config, workdir=run_dir, recipe=recipe, source=source,
                    checkpoints=checkpoints, checkpoint_meta=checkpoint_meta,
                    start_step=start_step)
  # Building the hooks opens their data (the eval split, the probe batch): a split the
  # dataset lacks is refused here, before the first step, not after an epoch.
  hooks = build_hooks(ctx)
  run_dir.write_config(config, replaced_because=changed)
  writer = create_writer(run_dir.path, jsonl_file=run_dir.metrics_file)
  progress = Progress(num_steps=num_steps, writer=writer, every_steps=log_every)
  signals = StopSignals()
  pending = []          # device metrics of the steps since the last log

  def check_finite() -> None:
    """Stops on the first non-finite step among the pending ones (one host sync)."""
    for offset, m in enumerate(device_map.to_host(pending)):
      if not m['finite']:
        _stop_diverged(step - len(pending) + offset + 1, m, checkpoints)

  def save_and_stop(step: int):
    checkpoints.save(step, state, checkpoint_meta(step))   # once: a no-op if step is saved
    checkpoints.wait()
    writer.flush()
    raise TrainingInterrupted(step, signals.received)

  def run_hooks(step: int, *, final: bool = False, start: bool = False) -> dict:
    due = [h for h in hooks if (h.runs_at_start or not start) and h.due(step, final=final)]
    if due and pending:
      check_finite()   # hooks see finite states only: a checkpoint never holds a failed step
    outputs = {}
    for hook in due:
      if hook.interruptible and signals.stop_requested():
        save_and_stop(step)
      outputs.update(hook(step, state, outputs))
    if outputs:
      writer.write_scalars(step, outputs)
    run_dir.heartbeat()   # after each step's work: a fresh heartbeat says this run is alive
    return outputs

  with signals.catching():
    run_hooks(start_step, start=True)
    faults.point('start', start_step)
    batches = device_map.prefetch(train_data.batches(start_step), config.data.prefetch)
    step, outputs = start_step, None
    while step < num_steps:
      if signals.stop_requested():
        save_and_stop(step)
      state, metrics = recipe.train_step(state, next(batches))
      pending.append(metrics)
      step += 1
      faults.point('step', step)
      if check_finite_every and len(pending) > 1 and step % check_finite_every == 0:
        # The previous step's flag: the current step is already queued behind it.
        if not bool(device_map.to_host(pending[-2]['finite'])):
          _stop_diverged(step - 1, pending[-2], checkpoints)
      progress(step)
      if step % log_every == 0 or step == num_steps:
        check_finite()
        host = device_map.to_host(pending)
        writer.write_scalars(step, {
            'train_loss': sum(float(m['loss']) for m in host) / len(host),
            'train_top1': sum(float(m['top1']) for m in host) / len(host),
            'learning_rate': float(host[-1]['learning_rate'])})
        pending = []
      outputs = run_hooks(step, final=step == num_steps)
    if outputs is None:   # nothing left to train: the end-of-training hooks still run
      outputs = run_hooks(step, final=True)

  for hook in hooks:
    hook.close()
  writer.flush()
  if signals.received:
    logging.warning('%s arrived during the last step: the run is complete, so it ends '
                    'normally', signals.received)
  results = {'name': config.name, 'step': step, 'eval_split': source.config.eval_split,
             **outputs, 'wall_seconds_this_run': round(time.time() - start_time, 1)}
  for hook in hooks:
    results.update(hook.summary())
  write_json_on_process_0(run_dir.results_file, results)
  top1 = {k: v for k, v in outputs.items() if k.endswith('_top1')}
  logging.info('RESULT %s: step %d, %s top-1 %s', config.name, step, source.config.eval_split,
               ', '.join(f'{k[:-5]} {v:.4f}' for k, v in top1.items()) or 'not evaluated')
  return results


def _stop_diverged(step: int, metrics, checkpoints: Checkpoints):
  checkpoints.wait()
  last = checkpoints.latest_step()
  lr = float(device_map.to_host(metrics['learning_rate']))
  raise TrainingDiverged(
      f'loss or gradients became NaN/Inf at step {step} (learning rate {lr:g}); '
      f'the state was not updated; the last checkpoint '
      f'({"step " + str(last) if last is not None else "none"}) is intact')
