"""One run of the multi-host checks, the same code on 1 process or on several.

  python tests/multihost_harness.py --mode run --out DIR --data_dir TFDS_DIR
run: from the same initial state, an exact eval and population statistics
     over fixed global batches (each process feeds its own slice); then 3 train
     steps on those batches with BN statistics synced in groups of
     --bn_group_size devices (0: all), and a checkpoint; process 0 writes
     DIR/result.npz. The network is the tiny BN-x5-Sigmoid twin: with ReLU, the
     odd pre-activation lands within float rounding of 0, and device layouts
     that sum in another order take the other side of the kink, a different
     (equally valid) gradient; a smooth nonlinearity makes the comparison exact
     to rounding.
disagree: every process checks a value that differs on process 1.
die: process 1 crashes (status 3) while process 0 waits for it.
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bn_repro.parallel import distributed  # noqa: E402  (before anything touches a device)

GLOBAL_BATCH = 16
STEPS = 3


def fixed_batches():
  import numpy as np
  rng = np.random.RandomState(0)
  return [{'image': rng.randint(0, 256, (GLOBAL_BATCH, 28, 28, 1)).astype(np.uint8),
           'label': rng.randint(0, 10, GLOBAL_BATCH).astype(np.int32),
           'aug_seed': np.stack([np.full(GLOBAL_BATCH, step), np.arange(GLOBAL_BATCH)],
                                axis=1).astype(np.uint32)} for step in range(STEPS)]


def local_slice(batch):
  from bn_repro.parallel import device_map
  n = GLOBAL_BATCH // device_map.process_count()
  start = device_map.process_index() * n
  return {k: v[start:start + n] for k, v in batch.items()}


def flat(tree, prefix):
  import jax
  import numpy as np
  from bn_repro.parallel import device_map
  leaves = jax.tree_util.tree_flatten_with_path(device_map.to_host(tree))[0]
  return {prefix + jax.tree_util.keystr(path): np.asarray(v) for path, v in leaves}


def compute_and_save(out_dir, data_dir, bn_group_size=0):
  import numpy as np
  from bn_repro.data import pipeline
  from bn_repro.evaluation import exact, population
  from bn_repro.parallel import device_map
  from bn_repro.training.checkpoints import Checkpoints, param_shapes
  from bn_repro.training.recipes import TrainingRecipe
  from configs import tiny

  config = tiny.get_config()
  config.data.data_dir = data_dir
  config.data.eval_split = 'test[:101]'
  config.model.bn.group_size = bn_group_size
  config.model.activation = 'sigmoid'
  recipe = TrainingRecipe(config, steps_per_epoch=100)
  source = pipeline.Source(config.data)
  state = recipe.init_state()
  initial = {**flat(state.params, 'initial_params'), **flat(state.ema_stats, 'initial_ema')}

  eval_data = pipeline.EvalData(source, global_batch=32)
  result = exact.evaluate(recipe.eval_step('ema'), state.variables(), eval_data).result
  stats = population.compute(
      recipe.model, state.variables(), source.spec,
      iter(device_map.shard(local_slice(b)) for b in fixed_batches()), STEPS).stats

  losses = []
  for batch in fixed_batches():
    state, metrics = recipe.train_step(state, device_map.shard(local_slice(batch)))
    losses.append(float(device_map.to_host(metrics['loss'])))

  checkpoints = Checkpoints(os.path.join(out_dir, 'workdir', 'checkpoints'))
  checkpoints.save(STEPS, state, {'param_shapes': param_shapes(state.params), 'step': STEPS})
  checkpoints.wait()

  if device_map.process_index() == 0:
    arrays = {'losses': np.asarray(losses),
              'eval_counts': np.asarray([result.count, result.top1_correct, result.top5_correct]),
              **flat(state.params, 'params'), **flat(state.ema_stats, 'ema'), **initial,
              **flat(stats, 'population')}
    np.savez(os.path.join(out_dir, 'result.npz'), **arrays)
  device_map.sync_processes('harness done')


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--mode', choices=['run', 'disagree', 'die'], required=True)
  parser.add_argument('--out')
  parser.add_argument('--data_dir')
  parser.add_argument('--bn_group_size', type=int, default=0)
  args = parser.parse_args()
  distributed.initialize()
  from bn_repro.parallel import device_map
  if args.mode == 'run':
    compute_and_save(args.out, args.data_dir, args.bn_group_size)
  elif args.mode == 'disagree':
    device_map.check_same_on_all_processes('config', f'value {min(device_map.process_index(), 1)}')
  else:
    if device_map.process_index() == 1:
      os._exit(3)  # a crash: no clean shutdown
    time.sleep(1)
    device_map.sync_processes('waiting for process 1')


if __name__ == '__main__':
  main()
