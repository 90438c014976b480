"""Timing helpers: each measurement reports the median and the spread of its repeats.

Comparisons run in the same process, interleaved, so that a slow moment of the
machine hits every side alike. Compile time is measured apart from run time.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import resource
import statistics
import time
from typing import Callable

import jax

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


def host_cpu(cpuinfo: str = '/proc/cpuinfo') -> str:
  """The host CPU's model as Linux names it (with its family/model numbers, which tell
  generations apart where the name does not, e.g. 'AMD EPYC'), else platform's guess.
  Per-core throughput of the input pipeline depends on it."""
  fields = {}
  try:
    with open(cpuinfo) as f:
      for line in f:
        key, _, value = line.partition(':')
        if not key.strip():
          break   # the first processor's block is enough
        fields.setdefault(key.strip(), value.strip())
  except OSError:
    return platform.processor() or platform.machine()
  name = fields.get('model name', platform.processor() or platform.machine())
  if 'cpu family' in fields and 'model' in fields:
    name += f' (family {fields["cpu family"]}, model {fields["model"]})'
  return name


def environment() -> dict:
  return {'jax': jax.__version__, 'backend': jax.default_backend(),
          'devices': device_map.device_count(), 'device_kind': jax.devices()[0].device_kind,
          'cpu_count': os.cpu_count(), 'host_cpu': host_cpu()}
