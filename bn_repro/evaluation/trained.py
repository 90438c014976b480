"""A trained (or interrupted) run, loaded back from its workdir for inference.

Only what inference needs is restored: the config, the model and its
{params, EMA statistics}; no optimizer is built.
"""

from __future__ import annotations

import dataclasses

from bn_repro.errors import UserError
from bn_repro.training.checkpoints import Checkpoints
from bn_repro.training.recipe import InferenceRecipe
from bn_repro.training.state import eval_variables
from bn_repro.workdir import Workdir


@dataclasses.dataclass
class TrainedModel:
  workdir: Workdir
  recipe: InferenceRecipe   # the config, the device-mapped model and its eval steps
  model_part: dict          # {params, EMA statistics}, replicated over all devices
  step: int

  @property
  def config(self):
    return self.recipe.config

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
  """The model of checkpoint `step` (default: the latest) of a workdir."""
  workdir = workdir if isinstance(workdir, Workdir) else Workdir(workdir)
  recipe = InferenceRecipe(workdir.load_config())
  checkpoints = Checkpoints(workdir.checkpoint_dir, read_only=True)
  try:
    available = checkpoints.all_steps()
    if not available:
      raise UserError(f'{workdir} has no checkpoint: train it first with scripts/train.py')
    step = available[-1] if step is None else step
    if step not in available:
      raise UserError(f'{workdir} has no checkpoint at step {step}; it has {available}')
    model_part, _ = checkpoints.restore_model(step, recipe.abstract_model_part())
  finally:
    checkpoints.close()
  return TrainedModel(workdir, recipe, model_part, step)
