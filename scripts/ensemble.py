"""Ensembles trained runs: the mean of their class probabilities (and crops).

  python scripts/ensemble.py --workdirs workdirs/m1,workdirs/m2 --statistics population --crops 144
"""

from absl import flags

from bn_repro import cli

flags.DEFINE_list('workdirs', None, 'Training workdirs of the members.')
flags.DEFINE_enum('statistics', 'population', cli.EVAL_STATISTICS,
                  'BN statistics to normalize with.')
flags.DEFINE_enum('crops', '1', ['1', '10', '144'], 'Crops per image.')
flags.DEFINE_string('split', None, 'tfds split (default: the members\' eval split).')
flags.DEFINE_integer('batch_size', None, 'Global batch of images (default: from the config).')
flags.DEFINE_string('output', None, 'JSON file for the table (default: none).')
flags.mark_flags_as_required(['workdirs'])
cli.answer_help()   # before the imports below, which load TensorFlow and JAX (seconds)

from bn_repro.evaluation import ensemble, evaluators  # noqa: E402
from bn_repro.workdir import write_json_on_process_0  # noqa: E402


def main(argv):
  del argv
  f = flags.FLAGS
  spec = evaluators.EvalSpec(statistics=f.statistics, crops=int(f.crops), split=f.split)
  result = ensemble.ensemble(f.workdirs, spec, batch_size=f.batch_size)
  print(f'{result["split"]}, {result["statistics"]} BN statistics, {result["crops"]} crop(s):')
  print(evaluators.format_rows(result['rows'], 'member'))
  if f.output:
    write_json_on_process_0(f.output, result)


if __name__ == '__main__':
  cli.start(main)
