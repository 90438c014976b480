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

The statistics are saved per checkpoint (Workdir.population_dir) with how they
were made; they never replace the EMA statistics. This module reads no data
itself: callers pass device batches (evaluation.checkpoint_population reads a
workdir's training data).
"""

from __future__ import annotations

import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

from bn_repro import faults, files
from bn_repro.data.on_device import Augmentation, standardize, train_images
from bn_repro.errors import UserError
from bn_repro.models.batchnorm import BATCH_MOMENTS
from bn_repro.parallel import device_map
from bn_repro.workdir import Workdir, read_json, write_json_on_process_0


@dataclasses.dataclass(frozen=True)
class PopulationStatistics:
  """What Algorithm 2 computed: per BN layer {mean, var} (float32, unbiased variance), the
  number of values pooled per feature in one BN batch, by layer, and the seconds it took
  (after the compiling first batch)."""
  stats: dict
  values_per_bn_batch: dict
  seconds: float


def make_moments_step(model, spec, augmentation: Augmentation | None = None, seed: int = 0):
  """(variables, batch) -> this batch's BN moments, averaged over all BN groups.

  Training batches arrive as the train step gets them: with `augmentation` (and the
  seed of their stream) the step augments them as the train step does.
  """
  # Statistics shared by all devices are already the same everywhere.
  all_devices = model.opts.bn_groups.spans_all_devices

  def step(variables, batch):
    images = train_images(batch, spec, augmentation, seed)
    _, state = model.apply(variables, images, train=False, stats='batch',
                           mutable=[BATCH_MOMENTS])
    moments = state[BATCH_MOMENTS]
    return moments if all_devices else device_map.pmean(moments)

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


def compute(model, variables, spec, batches, num_batches: int, *, step=None,
            augmentation: Augmentation | None = None, seed: int = 0) -> PopulationStatistics:
  """Algorithm 2 over `num_batches` device batches.

  step: a make_moments_step to reuse (its compilation) across calls; else one is made
  with `augmentation` and `seed` (those of the training batches' stream).
  """
  step = step or make_moments_step(model, spec, augmentation, seed)
  sums = step(variables, next(batches))
  jax.block_until_ready(sums)  # the first call compiles: time the other batches
  start = time.perf_counter()
  for _ in range(num_batches - 1):
    sums = jax.tree.map(jnp.add, sums, step(variables, next(batches)))
  sums = device_map.to_host(sums)
  seconds = time.perf_counter() - start
  counts = {}
  _collect_counts(sums, (), counts, num_batches)
  return PopulationStatistics(finalize(sums, num_batches), counts, seconds)


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


def save(workdir: Workdir, step: int, stats: dict, meta: dict, reports: dict | None = None) -> str:
  """Saves statistics and meta (and `reports`, {Workdir file name: JSON value}) for checkpoint
  `step`; the previous ones, if any, are replaced only once the new ones are complete."""
  final = workdir.population_dir(step)
  staging = workdir.population_staging_dir(step)
  if device_map.process_index() == 0:
    files.remove_tree(staging)
  device_map.sync_processes('population stats staging cleared')
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(workdir.population_stats_item(staging), stats)
  checkpointer.wait_until_finished()
  for name, value in (reports or {}).items():
    write_json_on_process_0(files.join(staging, name), value)
  write_json_on_process_0(workdir.population_meta_file(staging), meta)
  if device_map.process_index() == 0:
    replaced = workdir.population_replaced_dir(step)
    if files.exists(final):
      files.rename(final, replaced)
    faults.point('population_swap', step)
    files.rename(staging, final)
    files.remove_tree(replaced)
  device_map.sync_processes('population stats saved')
  return final


def _complete_copy(workdir: Workdir, step: int) -> str:
  """The directory to read the statistics of `step` from. A save killed between its two
  renames leaves no <step>/ but a complete copy beside it: the new one (staging, complete
  once its meta file is written last) or the old one (replaced); the next save tidies up."""
  final = workdir.population_dir(step)
  if files.exists(workdir.population_meta_file(final)):
    return final
  for candidate in (workdir.population_staging_dir(step), workdir.population_replaced_dir(step)):
    if files.exists(workdir.population_meta_file(candidate)):
      logging.warning('population statistics of step %d: a save was interrupted; using the '
                      'complete copy %s', step, candidate)
      return candidate
  return final


def load(workdir: Workdir, step: int) -> tuple[dict, dict]:
  """(stats, meta) computed for checkpoint `step`, or a one-line error saying how to compute them."""
  directory = _complete_copy(workdir, step)
  if not files.exists(workdir.population_meta_file(directory)):
    raise UserError(
        f'no population statistics for step {step} in {workdir}: compute them with '
        f'python scripts/population_stats.py --workdir {workdir}')
  meta = read_json(workdir.population_meta_file(directory))
  stats = ocp.StandardCheckpointer().restore(workdir.population_stats_item(directory))
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
