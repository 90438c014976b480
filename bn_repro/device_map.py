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

import functools
import hashlib
import itertools
from typing import Any, Callable, Sequence

import jax
import numpy as np
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
  mapped = jax.pmap(fn, axis_name=AXIS, in_axes=tuple(in_axes),
                    out_axes=out_axes, donate_argnums=tuple(donate_argnums))
  if process_count() == 1:
    return mapped

  # With several processes pmap returns host-local arrays (over this
  # process's devices); make them global again, without copying.
  @functools.wraps(fn)
  def run(*args):
    outputs = mapped(*args)
    return multihost_utils.host_local_array_to_global_array(
        outputs, mesh(), _output_specs(out_axes, outputs))

  return run


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


def bn_axis_index_groups(group_size: int) -> list[list[int]] | None:
  """Device groups whose BatchNorm statistics are averaged together.

  group_size 0 (or the device count) means one group of all devices (None is
  what lax collectives expect for that); k means consecutive groups of k
  devices on AXIS, which may span hosts.
  """
  n = device_count()
  if group_size in (0, n):
    return None
  if group_size < 0 or n % group_size:
    raise ValueError(
        f'bn.group_size={group_size} must be 0 (all devices) or divide the '
        f'device count {n}')
  return [list(range(start, start + group_size))
          for start in range(0, n, group_size)]


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
