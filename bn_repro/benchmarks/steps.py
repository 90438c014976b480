"""Speed of the compiled steps on synthetic, device-resident data (no TensorFlow needed).

Parts: (1) the bare train step, (4) BN statistics synced over all devices vs
per device, (5) Algorithm 2's moments pass vs an eval pass, (6) FLOPs per
image and model-FLOPs utilization.
"""

from __future__ import annotations

import dataclasses
import statistics
import time

import jax
import numpy as np

from bn_repro.data.on_device import Augmentation
from bn_repro.data.specs import image_shape
from bn_repro.evaluation import population
from bn_repro.models import abstract_variables, build_model
from bn_repro.models.summary import counted_flops, forward_flops
from bn_repro.parallel import device_map
from bn_repro.benchmarks.timing import Timing, interleaved
from bn_repro.training.recipes import TrainingRecipe

# Dense bf16 peak of accelerators we know (FLOP/s), for model-FLOPs utilization.
PEAK_FLOPS = {'H100': 989e12, 'H200': 989e12, 'A100': 312e12, 'v5e': 197e12, 'v4': 275e12}


def synthetic_batch(config, global_batch: int, seed: int = 0) -> dict:
  """A training batch as the input pipeline delivers it (with per-example augmentation
  seeds when the train step augments)."""
  shape = image_shape(config.data)
  rng = np.random.RandomState(seed)
  batch = {'image': rng.randint(0, 256, (global_batch,) + shape).astype(np.uint8),
           'label': rng.randint(0, config.model.num_classes, global_batch).astype(np.int32)}
  if config.data.augment_on_device:
    batch['aug_seed'] = np.stack([np.zeros(global_batch), np.arange(global_batch)],
                                 axis=1).astype(np.uint32)
  return batch


@dataclasses.dataclass
class StepSetup:
  recipe: TrainingRecipe
  state: object
  batch: dict                # device-resident, sharded
  compile_seconds: float


def setup_train_step(config, global_batch: int, *, group_size: int | None = None) -> StepSetup:
  """A replicated state and a compiled train step on a device-resident synthetic batch."""
  config = config.copy_and_resolve_references()
  if group_size is not None:
    config.model.bn.group_size = group_size
  recipe = TrainingRecipe(config, steps_per_epoch=1000)
  state = recipe.init_state()
  batch = device_map.shard(synthetic_batch(config, global_batch))
  start = time.perf_counter()
  state, metrics = recipe.train_step(state, batch)
  jax.block_until_ready(metrics)
  return StepSetup(recipe, state, batch, time.perf_counter() - start)


def run_steps(setup: StepSetup, num_steps: int) -> None:
  """num_steps train steps, blocking at the end only (no host syncs between)."""
  state, metrics = setup.state, None
  for _ in range(num_steps):
    state, metrics = setup.recipe.train_step(state, setup.batch)
  jax.block_until_ready(metrics)
  setup.state = state


def bare_step(config, global_batch: int, num_steps: int, repeats: int,
              warmup_steps: int = 10) -> dict:
  """(1) The jitted train step alone on device-resident data, timed after `warmup_steps`
  steps (an accelerator's first steps after compiling run slower: autotuning, clocks)."""
  setup = setup_train_step(config, global_batch)
  run_steps(setup, warmup_steps)
  times = interleaved({'step': lambda: run_steps(setup, num_steps)}, repeats)['step']
  return {'compile_seconds': round(setup.compile_seconds, 2), 'warmup_steps': warmup_steps,
          'images': Timing(times, num_steps * global_batch).summary(),
          'steps': Timing(times, num_steps).summary(),
          'images_per_s_by_repeat': [round(num_steps * global_batch / t, 1) for t in times]}


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
  model, spec = setup.recipe.model, setup.recipe.spec
  variables = setup.state.variables()
  moments = population.make_moments_step(model, spec, Augmentation.from_config(config.data))
  forward = population.make_forward_step(model, spec)
  jax.block_until_ready(moments(variables, setup.batch))
  jax.block_until_ready(forward(variables, setup.batch))

  def repeat(fn):
    out = None
    for _ in range(num_batches):
      out = fn(variables, setup.batch)
    jax.block_until_ready(out)

  times = interleaved({'population': lambda: repeat(moments), 'eval': lambda: repeat(forward)},
                      repeats)
  images = num_batches * global_batch
  return {'population_images': Timing(times['population'], images).summary(),
          'eval_images': Timing(times['eval'], images).summary(),
          'population_over_eval': statistics.median(times['population']) /
                                  statistics.median(times['eval'])}


def flops(config, train_images_per_s: float | None = None) -> dict:
  """(6) Forward FLOPs per image (XLA's cost analysis, or counted from the layers where a
  backend gives none) and, given a measured rate on a known accelerator, MFU."""
  shape = image_shape(config.data)
  model = build_model(config.model, image_size=shape[0])
  variables = abstract_variables(model, shape)
  counted = counted_flops(model, variables, shape)
  forward = forward_flops(model, variables, shape)
  result = {'forward_gflops_per_image': (forward or counted) / 1e9,
            'source': 'XLA cost analysis' if forward else 'counted from the layers',
            'counted_forward_gflops_per_image': counted / 1e9,
            'train_gflops_per_image (3x forward)': 3 * (forward or counted) / 1e9}
  kind = jax.devices()[0].device_kind
  peak = next((v for k, v in PEAK_FLOPS.items() if k in kind), None)
  result['device_kind'] = kind
  if peak and train_images_per_s:
    per_device = train_images_per_s / device_map.device_count()
    result['mfu'] = 3 * (forward or counted) * per_device / peak
    result['peak_flops'] = peak
  return result
