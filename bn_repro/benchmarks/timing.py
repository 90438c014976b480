"""Timing helpers: each measurement reports the median and the spread of its repeats.

Comparisons run in the same process, interleaved, so that a slow moment of the
machine hits every side alike. Compile time is measured apart from run time.
"""

from __future__ import annotations

import dataclasses
import os
import resource
import statistics
import time
from typing import Callable

import jax

from bn_repro import host
from bn_repro.parallel import device_map


@dataclasses.dataclass
class Timing:
  """Seconds per repeat (each repeat = `items` units of work)."""
  seconds: list[float]
  items: int

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
          'cpu_count': os.cpu_count(), 'host_cpu': host.cpu_model()}
