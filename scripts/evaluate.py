"""Evaluates a checkpoint over a whole split: top-1/top-5 error, every example once.

  python scripts/evaluate.py --workdir workdirs/bn_x30 --statistics population --crops 144
  python scripts/evaluate.py --workdir workdirs/bn_x30 --statistics ema --crops 1 --split 'test[:5000]'
"""

import json

from absl import flags

from bn_repro import cli

flags.DEFINE_string('workdir', None, 'Training workdir.')
flags.DEFINE_enum('statistics', 'population', cli.EVAL_STATISTICS,
                  'BN statistics to normalize with.')
flags.DEFINE_enum('crops', '1', ['1', '10', '144'], 'Crops per image.')
flags.DEFINE_string('split', None, 'tfds split (default: the config\'s eval split).')
flags.DEFINE_integer('step', None, 'Checkpoint step (default: the latest).')
flags.DEFINE_integer('batch_size', None, 'Global batch of images (default: from the config).')
flags.DEFINE_bool('save_probs', False, 'Save per-example class probabilities for ensembling.')
flags.mark_flags_as_required(['workdir'])
cli.answer_help()   # before the imports below, which load TensorFlow and JAX (seconds)

from bn_repro.evaluation import evaluators  # noqa: E402


def main(argv):
  del argv
  f = flags.FLAGS
  spec = evaluators.EvalSpec(statistics=f.statistics, crops=int(f.crops), split=f.split)
  record = evaluators.evaluate_workdir(f.workdir, spec, step=f.step, batch_size=f.batch_size,
                                      save_probs=f.save_probs).record
  record['model'] = f'{record["name"]} @ {record["checkpoint_step"]}'
  print(f'{record["split"]}, {record["statistics"]} BN statistics, {record["crops"]} crop(s):')
  print(evaluators.format_rows([record], 'model'))
  print(json.dumps({k: record[k] for k in ('top1_error', 'top5_error', 'examples')}))


if __name__ == '__main__':
  cli.start(main)
