"""Population statistics (Algorithm 2) of a checkpoint, over its run's training data."""

from __future__ import annotations

from bn_repro.data import pipeline
from bn_repro.data.on_device import Augmentation
from bn_repro.errors import UserError
from bn_repro.evaluation import population
from bn_repro.evaluation.trained import load_trained
from bn_repro.models.batchnorm import EMA_STATS
from bn_repro.parallel import device_map
from bn_repro.training.metric_writers import create_writer
from bn_repro.workdir import EMA_GAP_FILE


def require_batch_norm(config) -> None:
  if not config.model.batch_norm:
    raise UserError(f'{config.name} has no BatchNorm: there are no population statistics')


def compute_for_checkpoint(workdir: str, *, step: int | None = None, num_batches: int = 200,
                           batch_size: int | None = None, seed: int = 0,
                           time_eval_pass: bool = False, log=print) -> dict:
  """Computes, saves and reports the population statistics of a checkpoint; returns their meta.

  The batches are training batches (training preprocessing) of `batch_size`
  (default: the run's global batch) from a data stream of seed `seed`.
  time_eval_pass: also time an eval-mode pass over the same batches, for comparison.
  """
  trained = load_trained(workdir, step)
  config = trained.config
  require_batch_norm(config)
  if not trained.workdir.writable():   # say so before the computation, not after it
    raise UserError(f'{trained.workdir} is read-only: population statistics are saved in it; '
                    'make it writable or copy it elsewhere')
  if num_batches < 2:
    raise UserError(f'--num_batches={num_batches} must be at least 2')
  batch_size = batch_size or config.global_batch_size
  device_map.per_device_batch('--batch_size', batch_size)
  source = pipeline.Source(config.data)
  model, variables = trained.recipe.model, trained.variables()

  def batches():
    train_data = pipeline.TrainData(source, global_batch=batch_size, seed=seed)
    return device_map.prefetch(train_data.batches(0), config.data.prefetch)

  computed = population.compute(model, variables, source.spec, batches(), num_batches,
                                augmentation=Augmentation.from_config(config.data), seed=seed)
  stats, seconds = computed.stats, computed.seconds
  meta = {
      'checkpoint_step': trained.step, 'num_batches': num_batches,
      'global_batch_size': batch_size, 'seed': seed,
      'bn_groups': trained.recipe.bn_groups.describe(),
      'bn_group_size': config.model.bn.group_size, 'device_count': device_map.device_count(),
      'examples': num_batches * batch_size, 'values_per_bn_batch': computed.values_per_bn_batch,
      'seconds': round(seconds, 3),
  }
  if time_eval_pass:
    eval_seconds = population.time_forward(model, variables, source.spec, batches(), num_batches)
    meta['eval_pass_seconds'] = round(eval_seconds, 3)
  rows = population.ema_gap(device_map.to_host(trained.model_part[EMA_STATS]), stats,
                            config.model.bn.epsilon)
  directory = population.save(trained.workdir, trained.step, stats, meta,
                              reports={EMA_GAP_FILE: rows})
  writer = create_writer(trained.workdir.population_root)
  writer.write_scalars(trained.step, {f'ema_gap/mean/{r["layer"]}': r['mean_gap'] for r in rows})
  writer.write_scalars(trained.step, {f'ema_gap/var/{r["layer"]}': r['var_log_ratio'] for r in rows})
  writer.close()
  log(f'Population statistics of {trained.workdir} at step {trained.step}: {num_batches} '
      f'batches of {batch_size} training images (seed {seed}), saved in {directory}')
  log('How far the EMA statistics are from them:')
  log(population.format_gap_table(rows))
  if time_eval_pass:
    log(f'population pass: {seconds:.2f} s over {num_batches - 1} batches; eval pass over the '
        f'same images: {meta["eval_pass_seconds"]:.2f} s')
  return meta
