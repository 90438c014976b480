"""How a config becomes a model, a schedule, an optimizer, a state and compiled steps.

The one place that assembles them: the training loop, evaluation of a
workdir, the benchmarks and the tests all start here, so they cannot disagree
on what a config means. BN statistics are grouped over devices once, here
(`bn_groups`), and the model, the train step and Algorithm 2 all read that
one value.

for_training / for_inference build a recipe once per identity of the config
(training.identity: what it trains, not how long or where its data lives) in
a process, so the steps compile once however many runs the process starts.
"""

from __future__ import annotations

import functools

import jax
import optax

from bn_repro.data.on_device import Augmentation
from bn_repro.data.specs import DatasetSpec, dataset_spec, image_shape
from bn_repro.training.eval_step import make_eval_step
from bn_repro.models import abstract_variables, build_model
from bn_repro.models.batchnorm import layer_mode
from bn_repro.parallel import device_map
from bn_repro.training import optim
from bn_repro.training.checkpoints import abstract_like
from bn_repro.training.identity import identity_key
from bn_repro.training.state import TrainState, create_train_state
from bn_repro.training.train_step import make_train_step


class InferenceRecipe:
  """What evaluating a config's model needs: the device-mapped model and its eval steps.
  It reads only the config's identity fields (training.identity)."""

  def __init__(self, config):
    self.config = config.copy_and_resolve_references()
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
    return make_eval_step(self.model, self.spec, bn_mode=mode)


class TrainingRecipe(InferenceRecipe):
  """... plus the learning-rate schedule (built once), the optimizer, the state and the train step."""

  def __init__(self, config, steps_per_epoch: int):
    super().__init__(config)
    self.steps_per_epoch = steps_per_epoch
    self.schedule: optax.Schedule = optim.learning_rate_schedule(
        self.config.optimizer, steps_per_epoch, self.config.global_batch_size)
    self.tx = optim.make_optimizer(self.config.optimizer, self.schedule)
    self.train_step = make_train_step(self.model, self.tx, self.schedule, self.spec,
                                      Augmentation.from_config(self.config.data),
                                      self.config.seed)

  def init_state(self) -> TrainState:
    """A fresh state from config.seed, replicated over all devices."""
    return create_train_state(self.model, self.tx, self.image_shape, self.config.seed,
                              sharding=device_map.replicated_sharding())

  def abstract_state(self) -> TrainState:
    """Shapes, dtypes and shardings of init_state(), computing nothing: a restore target."""
    abstract = jax.eval_shape(lambda: create_train_state(self.model, self.tx, self.image_shape,
                                                         self.config.seed))
    return abstract_like(abstract, device_map.replicated_sharding())


_CACHE = {}        # (kind, identity, steps per epoch, device count) -> recipe, oldest first
_CACHE_SIZE = 8


def _cached_by_identity(kind: type, config, steps_per_epoch: int | None):
  key = (kind, identity_key(config), steps_per_epoch, device_map.device_count())
  if key not in _CACHE:
    if len(_CACHE) >= _CACHE_SIZE:
      del _CACHE[next(iter(_CACHE))]
    _CACHE[key] = kind(config) if steps_per_epoch is None else kind(config, steps_per_epoch)
  return _CACHE[key]


def for_training(config, steps_per_epoch: int) -> TrainingRecipe:
  return _cached_by_identity(TrainingRecipe, config, steps_per_epoch)


def for_inference(config) -> InferenceRecipe:
  return _cached_by_identity(InferenceRecipe, config, None)
