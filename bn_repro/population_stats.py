"""Population statistics for inference: the paper's Algorithm 2.

With the weights frozen, the network runs in training-statistics mode over N
mini-batches of TRAINING data (training preprocessing, a fixed seed). For
every BN layer, with mu_B and sigma2_B the statistics one BN batch was
normalized with and m the number of values pooled per feature in that BN
batch (batch x positions x devices of the BN group):

    E[x]   = mean over BN batches of mu_B
    Var[x] = m / (m - 1) * mean over BN batches of sigma2_B

With BN groups smaller than all devices, every group's batch is one BN batch,
so the mean runs over steps and groups. The result is the same as one device
seeing the same BN batches one after the other.

The statistics are saved per checkpoint in <workdir>/population_stats/<step>/
with how they were made; they never replace the EMA statistics.
"""

from __future__ import annotations

import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from bn_repro import device_map, files
from bn_repro.batchnorm import BATCH_MOMENTS
from bn_repro.errors import UserError
from bn_repro.steps import standardize

POPULATION_DIR = 'population_stats'
META_FILE = 'meta.json'


def make_moments_step(model, spec):
  """(variables, batch) -> this batch's BN moments, averaged over all BN groups."""
  # Statistics synced over all devices are already the same everywhere.
  one_group = model.opts.axis_name is not None and model.opts.axis_index_groups is None

  def step(variables, batch):
    images = standardize(batch['image'], spec)
    _, state = model.apply(variables, images, train=False, stats='batch',
                           mutable=[BATCH_MOMENTS])
    moments = state[BATCH_MOMENTS]
    return moments if one_group else device_map.pmean(moments)

  return device_map.map_over_devices(step, in_axes=(None, 0), out_axes=None)


def make_forward_step(model, spec):
  """(variables, batch) -> a scalar: an eval-mode forward pass, for timing."""

  def step(variables, batch):
    logits = model.apply(variables, standardize(batch['image'], spec), train=False, stats='ema')
    return device_map.pmean(jnp.mean(logits))

  return device_map.map_over_devices(step, in_axes=(None, 0), out_axes=None)


def finalize(moment_sums, num_batches: int) -> dict:
  """Sums over batches of {mean, var, count} per layer -> {mean, var} per layer (float32)."""

  def layer(m):
    count = float(np.asarray(m['count'])) / num_batches
    mean = np.asarray(m['mean'], np.float64) / num_batches
    var = np.asarray(m['var'], np.float64) / num_batches * count / (count - 1)
    return {'mean': mean.astype(np.float32), 'var': var.astype(np.float32)}

  return _map_layers(layer, moment_sums)


def _map_layers(fn, tree):
  """Applies fn to every {mean, var, ...} leaf-dict of a BN-statistics tree."""
  if 'mean' in tree and not isinstance(tree['mean'], dict):
    return fn(tree)
  return {k: _map_layers(fn, v) for k, v in tree.items()}


def compute(model, variables, spec, batches, num_batches: int, *, step=None):
  """Algorithm 2 over `num_batches` device batches; returns (stats, values per BN batch by layer, seconds).

  step: a make_moments_step(model, spec) to reuse (its compilation) across calls.
  """
  step = step or make_moments_step(model, spec)
  sums = step(variables, next(batches))
  jax.block_until_ready(sums)  # the first call compiles: time the other batches
  start = time.perf_counter()
  for _ in range(num_batches - 1):
    sums = jax.tree.map(jnp.add, sums, step(variables, next(batches)))
  sums = device_map.to_host(sums)
  seconds = time.perf_counter() - start
  counts = {}
  _collect_counts(sums, (), counts, num_batches)
  return finalize(sums, num_batches), counts, seconds


def _collect_counts(tree, path, out, num_batches):
  if 'count' in tree and not isinstance(tree['count'], dict):
    out['/'.join(path)] = int(round(float(tree['count']) / num_batches))
    return
  for k, v in tree.items():
    _collect_counts(v, path + (k,), out, num_batches)


def time_forward(model, variables, spec, batches, num_batches: int) -> float:
  """Seconds of eval-mode forward passes over num_batches - 1 batches (after a compile)."""
  step = make_forward_step(model, spec)
  jax.block_until_ready(step(variables, next(batches)))
  start = time.perf_counter()
  out = None
  for _ in range(num_batches - 1):
    out = step(variables, next(batches))
  jax.block_until_ready(out)
  return time.perf_counter() - start


def stats_dir(workdir: str, step: int) -> str:
  return os.path.join(os.path.abspath(workdir), POPULATION_DIR, str(step))


def save(workdir: str, step: int, stats: dict, meta: dict) -> str:
  directory = stats_dir(workdir, step)
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(os.path.join(directory, 'stats'), stats, force=True)
  checkpointer.wait_until_finished()
  files.write_json(os.path.join(directory, META_FILE), meta)
  device_map.sync_processes('population stats saved')
  return directory


def load(workdir: str, step: int) -> tuple[dict, dict]:
  """(stats, meta) computed for checkpoint `step`, or a one-line error saying how to compute them."""
  directory = stats_dir(workdir, step)
  if not os.path.exists(os.path.join(directory, META_FILE)):
    raise UserError(
        f'no population statistics for step {step} in {workdir}: compute them with '
        f'python scripts/population_stats.py --workdir {workdir}')
  with open(os.path.join(directory, META_FILE), encoding='utf-8') as f:
    meta = json.load(f)
  stats = ocp.StandardCheckpointer().restore(os.path.join(directory, 'stats'))
  return stats, meta


def ema_gap(ema: dict, population: dict, epsilon: float) -> list[dict]:
  """Per BN layer: how far the EMA is from the population statistics.

  mean_gap: mean over features of |mu_ema - mu_pop| / sqrt(var_pop + eps)
  (in units of the population standard deviation); var_log_ratio: mean over
  features of |log((var_ema + eps) / (var_pop + eps))|.
  """
  rows = []

  def walk(e, p, path):
    if 'mean' in p and not isinstance(p['mean'], dict):
      std = np.sqrt(np.asarray(p['var'], np.float64) + epsilon)
      mean_gap = np.abs(np.asarray(e['mean']) - np.asarray(p['mean'])) / std
      var_ratio = np.abs(np.log((np.asarray(e['var'], np.float64) + epsilon) /
                                (np.asarray(p['var'], np.float64) + epsilon)))
      rows.append({'layer': '/'.join(path), 'mean_gap': float(mean_gap.mean()),
                   'var_log_ratio': float(var_ratio.mean())})
      return
    for k in p:
      walk(e[k], p[k], path + (k,))

  walk(ema, population, ())
  return rows


def format_gap_table(rows: list[dict]) -> str:
  width = max(len(r['layer']) for r in rows) + 2
  lines = [f'{"BN layer":<{width}}{"|mu_ema - mu_pop| / sigma":>28}{"|log var ratio|":>18}']
  lines += [f'{r["layer"]:<{width}}{r["mean_gap"]:>28.4f}{r["var_log_ratio"]:>18.4f}'
            for r in rows]
  mean_gap = float(np.mean([r['mean_gap'] for r in rows]))
  var_gap = float(np.mean([r['var_log_ratio'] for r in rows]))
  lines.append(f'{"mean over layers":<{width}}{mean_gap:>28.4f}{var_gap:>18.4f}')
  return '\n'.join(lines)


def require_batch_norm(config) -> None:
  if not config.model.batch_norm:
    raise UserError(f'{config.name} has no BatchNorm: there are no population statistics to compute')


def run(workdir: str, *, step: int | None = None, num_batches: int = 200,
        batch_size: int | None = None, seed: int = 0, log=print) -> dict:
  """Computes, saves and reports the population statistics of a checkpoint; returns its meta."""
  from bn_repro.input_pipeline import pipeline  # TensorFlow only where data is read
  from bn_repro.metric_logging import create_writer
  from bn_repro.trained_run import load_run

  trained = load_run(workdir, step)
  config = trained.config
  require_batch_norm(config)
  if num_batches < 2:
    raise UserError(f'--num_batches={num_batches} must be at least 2')
  batch_size = batch_size or config.global_batch_size
  device_map.per_device_batch('--batch_size', batch_size)
  source = pipeline.Source(config.data)
  variables = trained.state.variables()

  def batches():
    train_data = pipeline.TrainData(source, global_batch=batch_size, seed=seed)
    return pipeline.prefetch_to_devices(train_data.batches(0), config.data.prefetch)

  stats, counts, seconds = compute(trained.model, variables, source.spec, batches(), num_batches)
  eval_seconds = time_forward(trained.model, variables, source.spec, batches(), num_batches)
  meta = {
      'checkpoint_step': trained.step, 'num_batches': num_batches,
      'global_batch_size': batch_size, 'seed': seed,
      'bn_group_size': config.model.bn.group_size, 'device_count': device_map.device_count(),
      'examples': num_batches * batch_size, 'values_per_bn_batch': counts,
      'seconds': round(seconds, 3), 'eval_pass_seconds': round(eval_seconds, 3),
  }
  directory = save(workdir, trained.step, stats, meta)
  rows = ema_gap(device_map.to_host(trained.state.ema_stats), stats, config.model.bn.epsilon)
  files.write_json(os.path.join(directory, 'ema_gap.json'), rows)
  writer = create_writer(os.path.join(os.path.abspath(workdir), POPULATION_DIR))
  writer.write_scalars(trained.step, {f'ema_gap/mean/{r["layer"]}': r['mean_gap'] for r in rows})
  writer.write_scalars(trained.step, {f'ema_gap/var/{r["layer"]}': r['var_log_ratio'] for r in rows})
  writer.close()
  log(f'Population statistics of {workdir} at step {trained.step}: {num_batches} batches '
      f'of {batch_size} training images (seed {seed}), saved in {directory}')
  log('How far the EMA statistics are from them:')
  log(format_gap_table(rows))
  log(f'population pass: {seconds:.2f} s over {num_batches - 1} batches; eval pass over the '
      f'same images: {eval_seconds:.2f} s; ratio {seconds / eval_seconds:.2f}')
  return meta
