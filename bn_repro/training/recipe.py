"""How a config becomes a model, a schedule, an optimizer, a state and compiled steps.

The one place that assembles them: the training loop, evaluation of a
workdir, the benchmarks and the tests all start here, so they cannot disagree
on what a config means. BN statistics are grouped over devices once, here
(`bn_groups`), and the model, the train step and Algorithm 2 all read that
one value.
"""

from __future__ import annotations

import functools

import jax
import optax

from bn_repro.data.specs import DatasetSpec, dataset_spec, image_shape
from bn_repro.evaluation.exact import make_eval_step
from bn_repro.models import abstract_variables, build_model
from bn_repro.models.batchnorm import layer_mode
from bn_repro.parallel import device_map
from bn_repro.training import optim
from bn_repro.training.checkpoints import abstract_like
from bn_repro.training.state import TrainState, create_train_state
from bn_repro.training.train_step import make_train_step


class InferenceRecipe:
  """What evaluating a config's model needs: the device-mapped model and its eval steps."""

  def __init__(self, config):
    self.config = config
    self.image_shape: tuple[int, int, int] = image_shape(config.data)
    self.spec: DatasetSpec = dataset_spec(config.data.dataset)
    self.bn_groups = device_map.bn_groups(config.model.bn.group_size)
    self.model = build_model(config.model, image_size=self.image_shape[0],
                             bn_groups=self.bn_groups)

  def abstract_model_part(self) -> dict:
    """Shapes, dtypes and (replicated) shardings of {params, EMA statistics}."""
    return abstract_like(abstract_variables(self.model, self.image_shape),
                         device_map.replicated_sharding())

  def eval_step(self, statistics: str):
    """The compiled exact-evaluation step for BN `statistics` (models.batchnorm.EVAL_STATISTICS);
    'ema' and 'ema_debiased' share one program."""
    return self._eval_step(layer_mode(statistics))

  @functools.cache
  def _eval_step(self, mode: str):
    return make_eval_step(self.model, self.spec, stats=mode)


class TrainingRecipe(InferenceRecipe):
  """... plus the learning-rate schedule (built once), the optimizer, the state and the train step."""

  def __init__(self, config, steps_per_epoch: int):
    super().__init__(config)
    self.steps_per_epoch = steps_per_epoch
    self.schedule: optax.Schedule = optim.learning_rate_schedule(config.optimizer, steps_per_epoch)
    self.tx = optim.make_optimizer(config.optimizer, self.schedule)
    self.train_step = make_train_step(self.model, self.tx, self.schedule, self.spec)

  def init_state(self) -> TrainState:
    """A fresh state from config.seed, replicated over all devices."""
    return create_train_state(self.model, self.tx, self.image_shape, self.config.seed,
                              sharding=device_map.replicated_sharding())

  def abstract_state(self) -> TrainState:
    """Shapes, dtypes and shardings of init_state(), computing nothing: a restore target."""
    abstract = jax.eval_shape(lambda: create_train_state(self.model, self.tx, self.image_shape,
                                                         self.config.seed))
    return abstract_like(abstract, device_map.replicated_sharding())
