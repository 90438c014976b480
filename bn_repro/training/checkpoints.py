"""Checkpoints of the train state (orbax), with a clear error for the wrong one.

A checkpoint step holds three items:
- 'model': what inference needs, {params, EMA statistics} (replicated arrays);
- 'training': what only training needs to continue, {step, optimizer state, RNG};
- 'meta': JSON: the config, the parameter shapes, and what the data pipeline
  needs to continue (the step, the global batch, the seed).
Evaluation restores 'model' and 'meta' alone.

The metadata also holds a digest of every array saved. A restore recomputes
them: a checkpoint whose bytes changed (a bad disk, a copy cut short) is
"damaged", and training falls back to the newest intact checkpoint, moving
the damaged ones aside (<step>.damaged) and saying so. A checkpoint of
another architecture is refused and never touched.
"""

from __future__ import annotations

import contextlib
import hashlib
import shutil
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from flax import traverse_util

from bn_repro import faults, files
from bn_repro.errors import CheckpointError
from bn_repro.parallel import device_map
from bn_repro.training.state import TrainState

MODEL, TRAINING, META = 'model', 'training', 'meta'


def param_shapes(params) -> dict[str, list[int]]:
  """{'inception_3a/b1x1/conv/kernel': [1, 1, 192, 64], ...}: an architecture's fingerprint."""
  return {'/'.join(path): list(leaf.shape)
          for path, leaf in traverse_util.flatten_dict(params).items()}


class CheckpointDamaged(CheckpointError):
  """A checkpoint's files cannot be read back as they were written."""


def digests(tree) -> dict[str, str]:
  """{leaf path: BLAKE2b of its bytes} of replicated arrays (this process's copy)."""
  return {jax.tree_util.keystr(path): hashlib.blake2b(
      np.ascontiguousarray(device_map.to_host(leaf)).tobytes(), digest_size=16).hexdigest()
          for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


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
    self.directory = files.absolute(directory)
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, create=not read_only, read_only=read_only,
        cleanup_tmp_directories=False, enable_async_checkpointing=True)
    self._manager = ocp.CheckpointManager(self.directory, options=options,
                                          handler_registry=_handler_registry())
    self._last_saved = None   # the step this process last started to save

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def path(self, step: int) -> str:
    return files.join(self.directory, str(step))

  def save(self, step: int, state: TrainState, meta: dict) -> None:
    """Starts an asynchronous save of `step`, unless it is saved (or being saved) already:
    a step is saved once, whoever asks (the checkpoint hook, then a stop signal on the same
    step). `wait()` blocks until it is on disk."""
    if step == self._last_saved or step in self.all_steps():
      return
    parts = {MODEL: state.model_part(), TRAINING: state.training_part()}
    self._check_space(sum(x.nbytes for x in jax.tree.leaves(parts)))
    meta = dict(meta, digests={item: digests(part) for item, part in parts.items()})
    with self._write_errors():
      self._manager.save(step, args=ocp.args.Composite(
          **{item: ocp.args.PyTreeSave(part) for item, part in parts.items()},
          **{META: ocp.args.JsonSave(meta)}), force=True)
    self._last_saved = step
    faults.point('checkpoint', step)

  def wait(self) -> None:
    with self._write_errors():
      self._manager.wait_until_finished()

  def finish_in_flight_save(self) -> None:
    """On the way out after an error: lets a save in progress complete (a failure of its own
    is logged, not raised over the error that is ending the run)."""
    try:
      self._manager.wait_until_finished()
    except Exception as e:  # orbax and tensorstore report storage errors as many types
      logging.error('the checkpoint being written could not be completed: %s',
                    str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__)

  def _check_space(self, state_bytes: int) -> None:
    """Refuses to start a checkpoint that cannot fit on a local disk (a full disk is far
    clearer before a write than in the middle of one)."""
    if files.is_remote(self.directory):
      return
    free = shutil.disk_usage(self.directory).free
    needed = int(state_bytes * 1.1) + (1 << 20)     # the arrays, their metadata, a margin
    if free < needed:
      raise CheckpointError(
          f'not enough space for a checkpoint in {self.directory}: {needed / 2**20:.1f} MiB '
          f'needed, {free / 2**20:.1f} MiB free; free space, then run again to resume')

  @contextlib.contextmanager
  def _write_errors(self):
    """A checkpoint that cannot be written (a full disk, no permission) as one line."""
    try:
      yield
    except Exception as e:  # orbax and tensorstore report storage errors as many types
      message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
      raise CheckpointError(f'writing a checkpoint to {self.directory} failed ({message[:300]}); '
                            'free space or fix permissions, then run again to resume') from e

  def read_meta(self, step: int) -> dict:
    try:
      meta = self._manager.restore(step, args=ocp.args.Composite(
          **{META: ocp.args.JsonRestore()}))[META]
    except Exception as e:  # orbax raises many kinds of errors for a broken step
      raise CheckpointDamaged(
          f'checkpoint {self.path(step)} could not be read ({type(e).__name__})') from e
    if not isinstance(meta, dict) or 'param_shapes' not in meta:
      raise CheckpointDamaged(f'checkpoint {self.path(step)} has no usable metadata')
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
      raise CheckpointDamaged(
          f'checkpoint {self.path(step)} could not be restored ({type(e).__name__}: '
          f'{str(e).splitlines()[0][:200] if str(e) else ""})') from e
    parts = {item: restored[item] for item in targets}
    for item, part in parts.items():
      expected = meta.get('digests', {}).get(item)
      if expected is None:
        continue
      actual = digests(part)
      changed = sorted(k for k in expected if actual.get(k) != expected[k])
      if changed or set(actual) != set(expected):
        raise CheckpointDamaged(f'checkpoint {self.path(step)} is damaged: {item} '
                                f'{(changed or ["structure"])[0]} differs from what was saved')
    return parts, meta

  def restore_state(self, step: int, abstract_state: TrainState) -> tuple[TrainState, dict]:
    """(state, meta) of `step`, restored onto abstract_state's shapes and shardings."""
    parts, meta = self._restore(step, {MODEL: abstract_state.model_part(),
                                       TRAINING: abstract_state.training_part()})
    return TrainState.from_parts(parts[MODEL], parts[TRAINING]), meta

  def restore_latest_intact(self, abstract_state: TrainState):
    """(state, meta) of the newest checkpoint that restores intact, or None if there is none.

    Damaged newer checkpoints are moved aside (<step>.damaged) with a warning;
    if every checkpoint is damaged, nothing is moved and the newest one's error
    is raised. Another architecture is an error at once.
    """
    damaged = []
    for step in reversed(self.all_steps()):
      try:
        restored = self.restore_state(step, abstract_state)
      except CheckpointDamaged as e:
        damaged.append((step, e))
        continue
      for bad_step, error in damaged:
        aside = f'{self.path(bad_step)}.damaged'
        logging.warning('%s; moved it to %s and resumed from step %d instead',
                        error, aside, step)
        if device_map.process_index() == 0:
          files.rename(self.path(bad_step), aside)
      if damaged:
        device_map.sync_processes('damaged checkpoints moved aside')
        self._manager.reload()
      return restored
    if damaged:
      raise CheckpointError(f'{damaged[0][1]}; no older checkpoint is intact either: nothing '
                            'was changed; move the checkpoints away or use another --workdir')
    return None

  def restore_model(self, step: int, abstract_model_part: dict) -> tuple[dict, dict]:
    """({params, EMA statistics}, meta) of `step`: what inference needs, nothing more."""
    parts, meta = self._restore(step, {MODEL: abstract_model_part})
    return parts[MODEL], meta

  def close(self) -> None:
    self._manager.close()
