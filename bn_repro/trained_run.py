"""A finished (or interrupted) training run, loaded back from its workdir."""

from __future__ import annotations

import dataclasses
import os

import jax
import ml_collections

from bn_repro import device_map, optim
from bn_repro.checkpointing import Checkpoints, abstract_like
from bn_repro.errors import UserError
from bn_repro.input_pipeline.specs import image_shape
from bn_repro.models import build_model
from bn_repro.train import load_config
from bn_repro.train_state import TrainState, create_train_state


@dataclasses.dataclass
class TrainedRun:
  workdir: str
  config: ml_collections.ConfigDict
  model: object            # built with synced BN, for use inside the device map
  state: TrainState        # replicated over all devices
  step: int

  @property
  def image_shape(self):
    return image_shape(self.config.data)


def load_run(workdir: str, step: int | None = None) -> TrainedRun:
  """The config and the checkpoint `step` (default: the latest) of a workdir."""
  workdir = os.path.abspath(workdir)
  config = load_config(workdir)
  checkpoints = Checkpoints(workdir, read_only=True)
  available = checkpoints.all_steps()
  if not available:
    raise UserError(f'{workdir} has no checkpoint: train it first with scripts/train.py')
  step = available[-1] if step is None else step
  if step not in available:
    raise UserError(f'{workdir} has no checkpoint at step {step}; it has {available}')
  shape = image_shape(config.data)
  model = build_model(config.model, image_size=shape[0], sync_bn=True)
  tx = optim.make_optimizer(config.optimizer, steps_per_epoch=1)  # the schedule does not shape the state
  abstract = jax.eval_shape(lambda: create_train_state(model, tx, shape, config.seed))
  state, _ = checkpoints.restore(step, abstract_like(abstract, device_map.replicated_sharding()))
  checkpoints.close()
  return TrainedRun(workdir, config, model, state, step)
