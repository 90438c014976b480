"""Computes population statistics (paper Algorithm 2) for a checkpoint.

  python scripts/population_stats.py --workdir workdirs/bn_x30 [--num_batches 200]
      [--batch_size 256] [--seed 0] [--step N] [--time_eval_pass]
"""

from absl import flags

from bn_repro import cli

flags.DEFINE_string('workdir', None, 'Training workdir.')
flags.DEFINE_integer('step', None, 'Checkpoint step (default: the latest).')
flags.DEFINE_integer('num_batches', 200, 'Training mini-batches to average over.')
flags.DEFINE_integer('batch_size', None, 'Global mini-batch size (default: the training one).')
flags.DEFINE_integer('seed', 0, 'Seed of the training-data order and augmentation.')
flags.DEFINE_bool('time_eval_pass', False, 'Also time an eval pass over the same batches.')
flags.mark_flags_as_required(['workdir'])
cli.answer_help()   # before the imports below, which load TensorFlow and JAX (seconds)

from bn_repro.evaluation import checkpoint_population  # noqa: E402


def main(argv):
  del argv
  f = flags.FLAGS
  checkpoint_population.compute_for_checkpoint(
      f.workdir, step=f.step, num_batches=f.num_batches, batch_size=f.batch_size, seed=f.seed,
      time_eval_pass=f.time_eval_pass)


if __name__ == '__main__':
  cli.start(main)
