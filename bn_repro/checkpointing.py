"""Checkpoints of the train state (orbax), with a clear error for the wrong one.

A checkpoint step holds two items: 'state' (params, EMA statistics,
optimizer state, step, RNG; replicated arrays, written once by orbax from
all processes) and 'meta' (JSON: the config, the parameter shapes, and what
the data pipeline needs to continue: the step, the global batch, the seed).

A checkpoint that cannot be read, or that holds another architecture, is an
error that names it; it is never overwritten or deleted: the run stops
before saving anything.
"""

from __future__ import annotations

import functools
import os
from typing import Any

import jax
import orbax.checkpoint as ocp
from flax import traverse_util
from orbax.checkpoint._src.metadata import array_metadata_store

from bn_repro.errors import CheckpointError

STATE, META = 'state', 'meta'


def param_shapes(params) -> dict[str, list[int]]:
  """{'inception_3a/b1x1/conv/kernel': [1, 1, 192, 64], ...}: an architecture's fingerprint."""
  return {'/'.join(path): list(leaf.shape)
          for path, leaf in traverse_util.flatten_dict(params).items()}


def describe_mismatch(saved: dict, current: dict) -> str | None:
  """First difference between two param_shapes, in words; None if they agree."""
  for name in sorted(set(saved) | set(current)):
    if name not in current:
      return f'{name} is in the checkpoint but not in this model'
    if name not in saved:
      return f'{name} is in this model but not in the checkpoint'
    if list(saved[name]) != list(current[name]):
      return f'{name} has shape {tuple(saved[name])} there, {tuple(current[name])} here'
  return None


@functools.cache
def _use_plain_array_saving_on_cpu() -> None:
  # On CPU orbax splits replicated arrays over replicas by default, which
  # compiles a slicing program per array shape (seconds per checkpoint with
  # simulated devices) and buys nothing: every replica shares one host.
  if jax.default_backend() == 'cpu':
    handler = ocp.type_handlers.ArrayHandler(
        use_replica_parallel=False, array_metadata_store=array_metadata_store.Store())
    ocp.type_handlers.register_type_handler(jax.Array, handler, override=True)


class Checkpoints:
  """The checkpoints of one workdir: <workdir>/checkpoints/<step>/{state,meta}."""

  def __init__(self, workdir: str, *, keep: int = 3, read_only: bool = False):
    _use_plain_array_saving_on_cpu()
    self.directory = os.path.abspath(os.path.join(workdir, 'checkpoints'))
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, create=not read_only, read_only=read_only,
        cleanup_tmp_directories=False, enable_async_checkpointing=True)
    self._manager = ocp.CheckpointManager(self.directory, options=options,
                                          item_names=(STATE, META))

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def path(self, step: int) -> str:
    return os.path.join(self.directory, str(step))

  def save(self, step: int, state, meta: dict) -> None:
    """Starts an asynchronous save; `wait()` blocks until it is on disk."""
    self._manager.save(step, args=ocp.args.Composite(
        **{STATE: ocp.args.StandardSave(state), META: ocp.args.JsonSave(meta)}), force=True)

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def read_meta(self, step: int) -> dict:
    try:
      restored = self._manager.restore(step, args=ocp.args.Composite(
          **{META: ocp.args.JsonRestore()}))
      meta = restored[META]
    except Exception as e:  # orbax raises many kinds of errors for a broken step
      raise CheckpointError(
          f'checkpoint {self.path(step)} could not be read ({type(e).__name__}); '
          'it was left untouched: move it away or use another --workdir') from e
    if not isinstance(meta, dict) or 'param_shapes' not in meta:
      raise CheckpointError(f'checkpoint {self.path(step)} has no usable metadata; '
                            'it was left untouched: move it away or use another --workdir')
    return meta

  def restore(self, step: int, abstract_state: Any) -> tuple[Any, dict]:
    """(state, meta) of `step`, restored onto abstract_state's shapes and shardings."""
    meta = self.read_meta(step)
    mismatch = describe_mismatch(meta['param_shapes'], param_shapes(abstract_state.params))
    if mismatch:
      raise CheckpointError(
          f'checkpoint {self.path(step)} holds another architecture ({mismatch}); '
          'use the config it was trained with, or another --workdir')
    try:
      restored = self._manager.restore(step, args=ocp.args.Composite(
          **{STATE: ocp.args.StandardRestore(abstract_state)}))
    except Exception as e:
      raise CheckpointError(
          f'checkpoint {self.path(step)} could not be restored ({type(e).__name__}: '
          f'{str(e).splitlines()[0][:200] if str(e) else ""}); it was left untouched') from e
    return restored[STATE], meta

  def close(self) -> None:
    self._manager.close()


def abstract_like(tree, sharding) -> Any:
  """ShapeDtypeStructs of `tree` with `sharding`: the restore target."""
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), tree)
