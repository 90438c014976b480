"""Trains a model from a config file; re-running the same command resumes.

  python scripts/train.py --config configs/small_scale.py:bn_x30,fashion_mnist \\
      --workdir workdirs/bn_x30
  python scripts/train.py --config configs/bn_x5.py --workdir gs://... \\
      --config.optimizer.learning_rate=0.01
"""

from absl import flags
from ml_collections import config_flags

from bn_repro import cli

config_flags.DEFINE_config_file('config', None, 'Config file.', lock_config=True)
flags.DEFINE_string('workdir', None, 'Directory for checkpoints, metrics and results '
                    '(local or gs://).')
cli.define_allow_config_change()
flags.mark_flags_as_required(['config', 'workdir'])
cli.answer_help()   # before the imports below, which load TensorFlow and JAX (seconds)

from bn_repro.loop.train import train_and_evaluate  # noqa: E402


def main(argv):
  del argv
  f = flags.FLAGS
  train_and_evaluate(f.config, f.workdir, allow_config_change=f.allow_config_change)


if __name__ == '__main__':
  cli.start(main)
