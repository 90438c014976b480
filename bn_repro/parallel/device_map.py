"""How work is mapped onto devices: the one module that knows.

The codebase runs a per-device function on every accelerator of every host
under one named axis, AXIS. Everything else (the train step, BatchNorm's
cross-device statistics, exact evaluation) goes through these helpers, so the
device map (today `jax.pmap`) could be swapped for `jit` + `shard_map` here
alone.

Conventions:
- "replicated" values (the train state, metrics) live as global arrays with a
  fully replicated sharding over all devices; they never carry a device axis.
- "sharded" values (batches, per-example outputs) carry a leading device axis
  of size `device_count()` globally, `local_device_count()` on each host.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import hashlib
import itertools
import time
from typing import Any, Callable, Iterator, Sequence

import jax
import numpy as np
from absl import logging
from jax import lax
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from bn_repro.errors import ConfigError, UserError

# The one device axis: pmap's axis, BatchNorm's axis_name and every pmean.
AXIS = 'batch'

# Sync-point ids for stop_requested: one per call, the same sequence everywhere.
_step_counter = itertools.count().__next__


def device_count() -> int:
  return jax.device_count()


def local_device_count() -> int:
  return jax.local_device_count()


def process_index() -> int:
  return jax.process_index()


def process_count() -> int:
  return jax.process_count()


@functools.cache
def mesh() -> Mesh:
  """A 1-D mesh over every device of every process, in pmap's order."""
  return Mesh(np.asarray(jax.devices()), (AXIS,))


def per_device_batch(name: str, global_batch: int) -> int:
  """The per-device share of a global batch, or a one-line ConfigError."""
  n = device_count()
  if global_batch <= 0 or global_batch % n:
    raise ConfigError(f'{name}={global_batch} must be a positive multiple of the {n} devices '
                      f'(per-device batch = {name} / {n})')
  return global_batch // n


def per_process_batch(global_batch: int) -> int:
  """This process's share of a global batch (every process feeds the same number of devices,
  so a multiple of the device count divides evenly)."""
  return global_batch // process_count()


def replicated_sharding() -> NamedSharding:
  return NamedSharding(mesh(), PartitionSpec())


def sharded_sharding() -> NamedSharding:
  return NamedSharding(mesh(), PartitionSpec(AXIS))


def replicate(tree: Any) -> Any:
  """Host values (identical on every process) -> replicated global arrays."""

  def put(x):
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, replicated_sharding(),
                                        lambda index: x[index])

  return jax.tree.map(put, tree)


def split_for_devices(tree: Any) -> Any:
  """Host batch [local_batch, ...] -> [local_devices, local_batch / devices, ...]."""
  n = local_device_count()

  def split(x):
    x = np.asarray(x)
    if x.shape[0] % n:
      raise ValueError(f'a host batch of {x.shape[0]} does not split over '
                       f'{n} local devices')
    return x.reshape((n, x.shape[0] // n) + x.shape[1:])

  return jax.tree.map(split, tree)


def shard(tree: Any) -> Any:
  """This host's part of a batch -> global arrays with a leading device axis.

  Every host passes its own examples, [local_batch, ...]; the result is one
  global array [device_count, local_batch / local_devices, ...].
  """
  sharding = sharded_sharding()
  return jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(sharding, x),
      split_for_devices(tree))


def to_host(tree: Any) -> Any:
  """Replicated global arrays -> numpy, without cross-host traffic (numpy passes through)."""
  return jax.tree.map(
      lambda x: np.asarray(x.addressable_data(0) if isinstance(x, jax.Array) else x), tree)


def gather_to_host(tree: Any) -> Any:
  """Sharded global arrays [devices, per_device, ...] -> numpy [devices * per_device, ...] on every host."""

  def gather(x):
    if not x.is_fully_addressable:
      x = multihost_utils.process_allgather(x, tiled=True)
    x = np.asarray(x)
    return x.reshape((-1,) + x.shape[2:])

  return jax.tree.map(gather, tree)


def map_over_devices(fn: Callable, *, in_axes: Sequence[int | None],
                     out_axes: Any, donate_argnums: Sequence[int] = ()):
  """Runs `fn` once per device, compiled once.

  in_axes/out_axes: 0 for a sharded argument/output (the device axis is
  stripped inside `fn`), None for a replicated one. A replicated output must
  be identical on every device (e.g. the result of `pmean`). Outputs are
  global arrays over all devices of all processes, like the inputs.
  """
  mapped = pmapped = jax.pmap(fn, axis_name=AXIS, in_axes=tuple(in_axes),
                              out_axes=out_axes, donate_argnums=tuple(donate_argnums))
  if process_count() > 1:
    # With several processes pmap returns host-local arrays (over this
    # process's devices); make them global again, without copying.
    local_outputs = mapped

    def mapped(*args):
      outputs = local_outputs(*args)
      return multihost_utils.host_local_array_to_global_array(
          outputs, mesh(), _output_specs(out_axes, outputs))

  call = _logging_first_call(fn, mapped)
  # The optimized HLO of one device's program, for profiles (benchmarks/profile.py).
  call.hlo_text = lambda *args: pmapped.lower(*args).compile().as_text()
  return call


def _logging_first_call(fn: Callable, mapped: Callable) -> Callable:
  """`mapped`, saying how long its first call (the compilation, or a compilation-cache
  hit) takes: on an accelerator a big step compiles for minutes."""
  name = getattr(fn, '__qualname__', 'step').replace('.<locals>', '')
  compiled = False

  @functools.wraps(fn)
  def call(*args):
    nonlocal compiled
    if compiled:
      return mapped(*args)
    logging.info('compiling %s ...', name)
    start = time.perf_counter()
    outputs = jax.block_until_ready(mapped(*args))
    compiled = True
    logging.info('compiled %s and ran it once in %.1f s', name, time.perf_counter() - start)
    return outputs

  return call


def _output_specs(out_axes, outputs):
  if out_axes is None or isinstance(out_axes, int):
    spec = PartitionSpec() if out_axes is None else PartitionSpec(AXIS)
    return jax.tree.map(lambda _: spec, outputs)
  return tuple(_output_specs(a, o) for a, o in zip(out_axes, outputs))


def pmean(tree: Any) -> Any:
  return lax.pmean(tree, AXIS)


def psum(tree: Any) -> Any:
  return lax.psum(tree, AXIS)


def device_index():
  """This device's position on AXIS (inside a mapped function)."""
  return lax.axis_index(AXIS)


@dataclasses.dataclass(frozen=True)
class BNGroups:
  """Which devices share BatchNorm batch statistics: decided once per run, read by the
  model (which devices a BN layer averages over), the train step (whether the EMA must be
  averaged to stay replicated) and Algorithm 2 (whether moments differ between devices).

  size devices form one group, consecutive on AXIS (groups may span hosts).
  """
  size: int
  device_count: int

  @property
  def spans_all_devices(self) -> bool:
    """Every device normalizes with the same statistics."""
    return self.size == self.device_count

  @property
  def axis_name(self) -> str | None:
    """The axis a BN layer averages over; None: each device on its own."""
    return AXIS if self.size > 1 else None

  @property
  def axis_index_groups(self) -> tuple[tuple[int, ...], ...] | None:
    """lax collectives' groups; None for one group of all devices."""
    if self.size <= 1 or self.spans_all_devices:
      return None
    return tuple(tuple(range(start, start + self.size))
                 for start in range(0, self.device_count, self.size))

  def describe(self) -> str:
    if self.spans_all_devices:
      return f'all {self.device_count} devices'
    return 'each device alone' if self.size == 1 else f'groups of {self.size} devices'


# A model applied outside the device map (summaries, reference computations).
NO_DEVICE_AXIS = BNGroups(size=1, device_count=1)


def bn_groups(group_size: int) -> BNGroups:
  """model.bn.group_size -> BNGroups: 0 all devices, 1 each device alone, k groups of k."""
  n = device_count()
  if group_size < 0 or (group_size and n % group_size):
    raise ConfigError(
        f'model.bn.group_size={group_size} must be 0 (all devices), 1 (each device) or a '
        f'divisor of the device count {n}')
  return BNGroups(size=group_size or n, device_count=n)


def sync_processes(name: str) -> None:
  """A barrier across processes (no-op with one process)."""
  if process_count() > 1:
    multihost_utils.sync_global_devices(name)


def check_same_on_all_processes(what: str, value: str) -> None:
  """Raises UserError unless every process passes the same `value` (no-op with one process)."""
  if process_count() == 1:
    return
  digest = np.frombuffer(hashlib.sha256(value.encode()).digest()[:8], np.int64)
  digests = np.asarray(multihost_utils.process_allgather(digest)).reshape(-1)
  differing = [i for i, d in enumerate(digests) if d != digests[0]]
  if differing:
    raise UserError(f'processes disagree on the {what}: process(es) {differing} differ from '
                    'process 0; start every process with the same command and files')


def stop_requested(local_flag) -> bool:
  """Whether to save and stop now, on every process alike.

  One process: a SIGTERM seen by this process (local_flag). Several: JAX's
  preemption sync point, which all processes reach at the same step.
  """
  if process_count() == 1:
    return local_flag.is_set()
  return multihost_utils.reached_preemption_sync_point(_step_counter())


def prefetch(batches: Iterator[dict], size: int) -> Iterator:
  """Host batches -> device batches, `size` steps ahead (transfers are asynchronous)."""
  queue = collections.deque()
  for batch in batches:
    queue.append(shard(batch))
    if len(queue) > size:
      yield queue.popleft()
  while queue:
    yield queue.popleft()
