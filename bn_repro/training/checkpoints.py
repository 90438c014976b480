"""Checkpoints of the train state (orbax), with a clear error for the wrong one.

A checkpoint step holds three items:
- 'model': what inference needs, {params, EMA statistics} (replicated arrays);
- 'training': what only training needs to continue, {step, optimizer state, RNG};
- 'meta': JSON: the config, the parameter shapes, and what the data pipeline
  needs to continue (the step, the global batch, the seed).
Evaluation restores 'model' and 'meta' alone.

A checkpoint that cannot be read, or that holds another architecture, is an
error that names it; it is never overwritten or deleted: the run stops
before saving anything.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp
from flax import traverse_util

from bn_repro.errors import CheckpointError
from bn_repro.training.state import TrainState

MODEL, TRAINING, META = 'model', 'training', 'meta'


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


def _pytree_handler() -> ocp.handlers.PyTreeCheckpointHandler:
  # On a CPU orbax would split replicated arrays over their replicas, which
  # compiles a slicing program per array shape and buys nothing there: every
  # replica shares one host. Elsewhere orbax's defaults stand.
  if jax.default_backend() == 'cpu':
    return ocp.handlers.PyTreeCheckpointHandler(
        type_handler_registry=ocp.type_handlers.create_type_handler_registry(
            (jax.Array, ocp.type_handlers.ArrayHandler(use_replica_parallel=False))))
  return ocp.handlers.PyTreeCheckpointHandler()


def _handler_registry() -> ocp.handlers.DefaultCheckpointHandlerRegistry:
  registry = ocp.handlers.DefaultCheckpointHandlerRegistry()
  for item in (MODEL, TRAINING):
    handler = _pytree_handler()
    registry.add(item, ocp.args.PyTreeSave, handler)
    registry.add(item, ocp.args.PyTreeRestore, handler)
  registry.add(META, ocp.args.JsonSave, ocp.handlers.JsonCheckpointHandler())
  registry.add(META, ocp.args.JsonRestore, ocp.handlers.JsonCheckpointHandler())
  return registry


def abstract_like(tree, sharding) -> Any:
  """ShapeDtypeStructs of `tree` with `sharding`: a restore target."""
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), tree)


def _restore_args(target):
  return ocp.args.PyTreeRestore(item=target,
                                restore_args=ocp.checkpoint_utils.construct_restore_args(target))


class Checkpoints:
  """The checkpoints of one workdir: <directory>/<step>/{model,training,meta}."""

  def __init__(self, directory: str, *, keep: int = 3, read_only: bool = False):
    self.directory = os.path.abspath(directory)
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, create=not read_only, read_only=read_only,
        cleanup_tmp_directories=False, enable_async_checkpointing=True)
    self._manager = ocp.CheckpointManager(self.directory, options=options,
                                          handler_registry=_handler_registry())

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def path(self, step: int) -> str:
    return os.path.join(self.directory, str(step))

  def save(self, step: int, state: TrainState, meta: dict) -> None:
    """Starts an asynchronous save; `wait()` blocks until it is on disk."""
    self._manager.save(step, args=ocp.args.Composite(**{
        MODEL: ocp.args.PyTreeSave(state.model_part()),
        TRAINING: ocp.args.PyTreeSave(state.training_part()),
        META: ocp.args.JsonSave(meta)}), force=True)

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def read_meta(self, step: int) -> dict:
    try:
      meta = self._manager.restore(step, args=ocp.args.Composite(
          **{META: ocp.args.JsonRestore()}))[META]
    except Exception as e:  # orbax raises many kinds of errors for a broken step
      raise CheckpointError(
          f'checkpoint {self.path(step)} could not be read ({type(e).__name__}); '
          'it was left untouched: move it away or use another --workdir') from e
    if not isinstance(meta, dict) or 'param_shapes' not in meta:
      raise CheckpointError(f'checkpoint {self.path(step)} has no usable metadata; '
                            'it was left untouched: move it away or use another --workdir')
    return meta

  def _restore(self, step: int, targets: dict) -> tuple[dict, dict]:
    meta = self.read_meta(step)
    mismatch = describe_mismatch(meta['param_shapes'], param_shapes(targets[MODEL]['params']))
    if mismatch:
      raise CheckpointError(
          f'checkpoint {self.path(step)} holds another architecture ({mismatch}); '
          'use the config it was trained with, or another --workdir')
    try:
      restored = self._manager.restore(step, args=ocp.args.Composite(
          **{item: _restore_args(target) for item, target in targets.items()}))
    except Exception as e:
      raise CheckpointError(
          f'checkpoint {self.path(step)} could not be restored ({type(e).__name__}: '
          f'{str(e).splitlines()[0][:200] if str(e) else ""}); it was left untouched') from e
    return {item: restored[item] for item in targets}, meta

  def restore_state(self, step: int, abstract_state: TrainState) -> tuple[TrainState, dict]:
    """(state, meta) of `step`, restored onto abstract_state's shapes and shardings."""
    parts, meta = self._restore(step, {MODEL: abstract_state.model_part(),
                                       TRAINING: abstract_state.training_part()})
    return TrainState.from_parts(parts[MODEL], parts[TRAINING]), meta

  def restore_model(self, step: int, abstract_model_part: dict) -> tuple[dict, dict]:
    """({params, EMA statistics}, meta) of `step`: what inference needs, nothing more."""
    parts, meta = self._restore(step, {MODEL: abstract_model_part})
    return parts[MODEL], meta

  def close(self) -> None:
    self._manager.close()
