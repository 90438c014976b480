"""The demo: train the small BN-x30 twin on Fashion-MNIST, then evaluate it with
population statistics (Algorithm 2) and with the training EMA.

  python scripts/demo.py [--workdir workdirs/demo]
"""

import time

from absl import flags, logging
from ml_collections import config_flags

from bn_repro import cli

config_flags.DEFINE_config_file('config', 'configs/demo.py', 'Config file.', lock_config=True)
flags.DEFINE_string('workdir', 'workdirs/demo', 'Directory for checkpoints and results.')
flags.DEFINE_integer('population_batches', 100, 'Training batches for population statistics.')
cli.define_allow_config_change()
# The demo is the small smoke job, not a training run: on a GPU node with CPU-only JAX it
# runs on the CPU, saying so and naming the install command, rather than refusing.
flags.FLAGS.set_default('allow_cpu', True)
cli.answer_help()   # before the imports below, which load TensorFlow and JAX (seconds)

import jax  # noqa: E402

from bn_repro.evaluation import checkpoint_population, evaluators  # noqa: E402
from bn_repro.loop.train import train_and_evaluate  # noqa: E402
from bn_repro.parallel import distributed  # noqa: E402


def main(argv):
  del argv
  f = flags.FLAGS
  start = time.time()
  print(f'demo: running on {distributed.running_on()}', flush=True)
  # Training ends with an evaluation with the EMA statistics.
  ema = train_and_evaluate(f.config, f.workdir, allow_config_change=f.allow_config_change)
  checkpoint_population.compute_for_checkpoint(f.workdir, num_batches=f.population_batches,
                                               log=logging.info)
  population = evaluators.evaluate_workdir(f.workdir, evaluators.EvalSpec('population')).record
  print(f'RESULT demo: Fashion-MNIST test top-1 {population["top1"]:.4f} with population '
        f'statistics (EMA: {ema["eval_top1"]:.4f}) on {population["examples"]} test images, '
        f'{f.config.name} after {population["checkpoint_step"]} steps, '
        f'{(time.time() - start) / 60:.1f} min on {jax.default_backend().upper()}', flush=True)


if __name__ == '__main__':
  cli.start(main)
