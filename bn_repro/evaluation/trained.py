"""A trained (or interrupted) run, loaded back from its workdir for inference.

Only what inference needs is restored: the config, the model and its
{params, EMA statistics}; no optimizer is built.
"""

from __future__ import annotations

import dataclasses

import ml_collections
from absl import logging

from bn_repro.errors import UserError
from bn_repro.training.checkpoints import Checkpoints
from bn_repro.training import recipes
from bn_repro.training.identity import identity_difference
from bn_repro.training.recipes import InferenceRecipe
from bn_repro.training.state import eval_variables
from bn_repro.workdir import Workdir


@dataclasses.dataclass
class TrainedModel:
  workdir: Workdir
  config: ml_collections.ConfigDict
  recipe: InferenceRecipe   # the device-mapped model and its eval steps
  model_part: dict          # {params, EMA statistics}, replicated over all devices
  step: int

  def variables(self, statistics: str = 'ema', population_stats=None) -> dict:
    """Variables for evaluating with `statistics` (models.batchnorm.EVAL_STATISTICS)."""
    return eval_variables(self.model_part, statistics, step=self.step,
                          momentum=self.config.model.bn.momentum,
                          population_stats=population_stats)


def latest_step(workdir: Workdir) -> int | None:
  checkpoints = Checkpoints(workdir.checkpoint_dir, read_only=True)
  try:
    return checkpoints.latest_step()
  finally:
    checkpoints.close()


def load_trained(workdir: str | Workdir, step: int | None = None) -> TrainedModel:
  """The model of checkpoint `step` (default: the latest) of a workdir.

  The model is built from the config the checkpoint was trained with: if the
  workdir's config.json has been changed since in what it trains, that is said
  and the checkpoint's own config is used.
  """
  workdir = workdir if isinstance(workdir, Workdir) else Workdir(workdir)
  config = workdir.load_config()
  checkpoints = Checkpoints(workdir.checkpoint_dir, read_only=True)
  try:
    available = checkpoints.all_steps()
    if not available:
      raise UserError(f'{workdir} has no checkpoint: train it first with scripts/train.py')
    step = available[-1] if step is None else step
    if step not in available:
      raise UserError(f'{workdir} has no checkpoint at step {step}; it has {available}')
    trained_with = ml_collections.ConfigDict(checkpoints.read_meta(step)['config'])
    difference = identity_difference(trained_with, config)
    if difference:
      logging.warning('%s differs from the config checkpoint %d was trained with (%s); '
                      'evaluating it with its own config', workdir.config_file, step, difference)
      config = trained_with
    recipe = recipes.for_inference(config)
    model_part, _ = checkpoints.restore_model(step, recipe.abstract_model_part())
  finally:
    checkpoints.close()
  return TrainedModel(workdir, config, recipe, model_part, step)
