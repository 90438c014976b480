"""Speed measurements: each returns numbers, the script prints and saves them.

Comparisons run in the same process, interleaved, with repeats; each reports
the median and the spread (min, max) of its repeats. Compile time is measured
apart from run time. Nothing here is a test: tests never time anything.
"""

from __future__ import annotations

import dataclasses
import os
import resource
import statistics
import tempfile
import time
from typing import Callable

import jax
import numpy as np

from bn_repro import device_map, optim, population_stats, steps
from bn_repro.input_pipeline.specs import dataset_spec, image_shape
from bn_repro.models import abstract_variables, build_model
from bn_repro.models.summary import forward_flops
from bn_repro.train_state import create_train_state

# Dense bf16 peak of accelerators we know (FLOP/s), for model-FLOPs utilization.
PEAK_FLOPS = {'H100': 989e12, 'H200': 989e12, 'A100': 312e12, 'v5e': 197e12, 'v4': 275e12}


@dataclasses.dataclass
class Timing:
  """Seconds per repeat (each repeat = `items` units of work)."""
  seconds: list[float]
  items: int

  def rate(self, stat=statistics.median) -> float:
    return self.items / stat(self.seconds)

  def summary(self) -> dict:
    rates = [self.items / s for s in self.seconds]
    return {'median_per_s': statistics.median(rates), 'min_per_s': min(rates),
            'max_per_s': max(rates), 'repeats': len(rates)}


def interleaved(fns: dict[str, Callable[[], None]], repeats: int) -> dict[str, list[float]]:
  """Times each fn `repeats` times, alternating between them: {name: [seconds]}."""
  times = {name: [] for name in fns}
  for _ in range(repeats):
    for name, fn in fns.items():
      start = time.perf_counter()
      fn()
      times[name].append(time.perf_counter() - start)
  return times


def synthetic_batch(config, global_batch: int, seed: int = 0) -> dict:
  shape = image_shape(config.data)
  rng = np.random.RandomState(seed)
  return {'image': rng.randint(0, 256, (global_batch,) + shape).astype(np.uint8),
          'label': rng.randint(0, config.model.num_classes, global_batch).astype(np.int32)}


@dataclasses.dataclass
class StepSetup:
  model: object
  state: object
  train_step: Callable
  batch: dict                # device-resident, sharded
  compile_seconds: float


def setup_train_step(config, global_batch: int, *, group_size: int | None = None) -> StepSetup:
  """A replicated state and a compiled train step on a device-resident synthetic batch."""
  config = config.copy_and_resolve_references()
  if group_size is not None:
    config.model.bn.group_size = group_size
  shape = image_shape(config.data)
  model = build_model(config.model, image_size=shape[0], sync_bn=True)
  tx = optim.make_optimizer(config.optimizer, steps_per_epoch=1000)
  schedule = optim.learning_rate_schedule(config.optimizer, 1000)
  state = create_train_state(model, tx, shape, config.seed, device_map.replicated_sharding())
  train_step = steps.make_train_step(model, tx, schedule, dataset_spec(config.data.dataset),
                                     average_ema=config.model.bn.group_size != 0)
  batch = device_map.shard(synthetic_batch(config, global_batch))
  start = time.perf_counter()
  state, metrics = train_step(state, batch)
  jax.block_until_ready(metrics)
  return StepSetup(model, state, train_step, batch, time.perf_counter() - start)


def run_steps(setup: StepSetup, num_steps: int) -> None:
  """num_steps train steps, blocking at the end only (no host syncs between)."""
  state, metrics = setup.state, None
  for _ in range(num_steps):
    state, metrics = setup.train_step(state, setup.batch)
  jax.block_until_ready(metrics)
  setup.state = state


def bare_step(config, global_batch: int, num_steps: int, repeats: int) -> dict:
  """(1) The jitted train step alone on device-resident data."""
  setup = setup_train_step(config, global_batch)
  times = interleaved({'step': lambda: run_steps(setup, num_steps)}, repeats)['step']
  return {'compile_seconds': round(setup.compile_seconds, 2),
          'images': Timing(times, num_steps * global_batch).summary(),
          'steps': Timing(times, num_steps).summary()}


def synced_vs_per_device_bn(config, global_batch: int, num_steps: int, repeats: int) -> dict:
  """(4) Step time with BN statistics over all devices vs per device."""
  synced = setup_train_step(config, global_batch, group_size=0)
  local = setup_train_step(config, global_batch, group_size=1)
  times = interleaved({'synced': lambda: run_steps(synced, num_steps),
                       'per_device': lambda: run_steps(local, num_steps)}, repeats)
  s, p = statistics.median(times['synced']), statistics.median(times['per_device'])
  return {'devices': device_map.device_count(),
          'synced_step_ms': [round(1000 * t / num_steps, 2) for t in times['synced']],
          'per_device_step_ms': [round(1000 * t / num_steps, 2) for t in times['per_device']],
          'synced_over_per_device': s / p}


def population_vs_eval(config, global_batch: int, num_batches: int, repeats: int) -> dict:
  """(5) Algorithm 2's moments pass vs an eval forward pass over the same device-resident images."""
  setup = setup_train_step(config, global_batch)
  spec = dataset_spec(config.data.dataset)
  variables = setup.state.variables()
  moments = population_stats.make_moments_step(setup.model, spec)
  forward = population_stats.make_forward_step(setup.model, spec)
  jax.block_until_ready(moments(variables, setup.batch))
  jax.block_until_ready(forward(variables, setup.batch))

  def run(fn):
    out = None
    for _ in range(num_batches):
      out = fn(variables, setup.batch)
    jax.block_until_ready(out)

  times = interleaved({'population': lambda: run(moments), 'eval': lambda: run(forward)}, repeats)
  images = num_batches * global_batch
  return {'population_images': Timing(times['population'], images).summary(),
          'eval_images': Timing(times['eval'], images).summary(),
          'population_over_eval': statistics.median(times['population']) /
                                  statistics.median(times['eval'])}


def flops(config, global_batch_per_device: int | None = None,
          train_images_per_s: float | None = None) -> dict:
  """(6) XLA's forward FLOPs per image and, given a measured rate on an accelerator, MFU."""
  shape = image_shape(config.data)
  model = build_model(config.model, image_size=shape[0])
  forward = forward_flops(model, abstract_variables(model, shape), shape)
  result = {'forward_gflops_per_image': forward / 1e9,
            'train_gflops_per_image (3x forward)': 3 * forward / 1e9}
  device = jax.devices()[0]
  kind = getattr(device, 'device_kind', '')
  peak = next((v for k, v in PEAK_FLOPS.items() if k in kind), None)
  result['device_kind'] = kind
  if peak and train_images_per_s:
    per_device = train_images_per_s / device_map.device_count()
    result['mfu'] = 3 * forward * per_device / peak
    result['peak_flops'] = peak
  return result


def full_loop(config, num_steps: int) -> dict:
  """(2) train_and_evaluate's own loop: real input pipeline, metrics, checkpoints as configured.

  Throughput comes from the loop's progress reports after the first
  (which contains the compile); the final evaluation is not counted.
  """
  from bn_repro.metric_logging import read_metrics
  from bn_repro.train import train_and_evaluate
  config = config.copy_and_resolve_references()
  config.num_train_steps = num_steps
  config.eval_every_steps = -1
  config.eval_every_epochs = -1.0
  with tempfile.TemporaryDirectory() as workdir:
    train_and_evaluate(config, workdir)
    rates = [r['steps_per_sec'] for r in read_metrics(workdir) if 'steps_per_sec' in r][1:]
  if not rates:
    raise ValueError('too few steps for a progress report after the first; raise --steps')
  images = [r * config.global_batch_size for r in rates]
  return {'images': {'median_per_s': statistics.median(images), 'min_per_s': min(images),
                     'max_per_s': max(images), 'reports': len(images)}}


def cpu_seconds() -> float:
  usage = resource.getrusage(resource.RUSAGE_SELF)
  return usage.ru_utime + usage.ru_stime


def time_iterator(make_iterator: Callable, num_batches: int, batch_size: int) -> tuple[float, float]:
  """(images/s, CPU-ms per image) of pulling num_batches from a fresh iterator (after one warm-up batch)."""
  iterator = make_iterator()
  next(iterator)
  wall, cpu = time.perf_counter(), cpu_seconds()
  for _ in range(num_batches):
    next(iterator)
  wall, cpu = time.perf_counter() - wall, cpu_seconds() - cpu
  images = num_batches * batch_size
  return images / wall, 1000 * cpu / images


def environment() -> dict:
  return {'jax': jax.__version__, 'backend': jax.default_backend(),
          'devices': device_map.device_count(), 'device_kind': jax.devices()[0].device_kind,
          'cpu_count': os.cpu_count()}
