"""Trains with the internal-covariate-shift probe on chosen layers, then plots them.

  python scripts/ics_probe.py --config configs/small_scale.py:inception --workdir workdirs/ics \\
      --layers inception_3a/b1x1,inception_5b/b1x1 [--every_steps 100] [--unit 0]

Records go to <workdir>/ics_probe.jsonl (percentiles of one unit's input,
layer and per-channel means and variances, drift between records); plots to
<workdir>/ics_<layer>.png. Re-running resumes the training and the records.
An unknown layer name lists the layers that can be probed.
"""

from absl import flags
from ml_collections import config_flags

from bn_repro import cli

config_flags.DEFINE_config_file('config', None, 'Config file.', lock_config=True)
flags.DEFINE_string('workdir', None, 'Directory for checkpoints, metrics and probe records.')
flags.DEFINE_list('layers', None, 'Layers whose nonlinearity inputs to record.')
flags.DEFINE_integer('every_steps', 100, 'Steps between records.')
flags.DEFINE_integer('unit', 0, 'The unit (channel) whose percentiles are recorded.')
flags.DEFINE_bool('plots', True, 'Write the plots after training.')
cli.define_allow_config_change()
flags.mark_flags_as_required(['config', 'workdir', 'layers'])
cli.answer_help()   # before the imports below, which load TensorFlow and JAX (seconds)

from bn_repro.evaluation import ics_probe  # noqa: E402
from bn_repro.research import plots  # noqa: E402
from bn_repro.loop.train import train_and_evaluate  # noqa: E402
from bn_repro.workdir import Workdir  # noqa: E402


def main(argv):
  del argv
  f = flags.FLAGS
  config = f.config
  with config.unlocked():
    config.hooks.ics_probe.layers = tuple(f.layers)
    config.hooks.ics_probe.every = f'{f.every_steps} steps'
    config.hooks.ics_probe.unit = f.unit
  train_and_evaluate(config, f.workdir, allow_config_change=f.allow_config_change)
  if f.plots:
    workdir = Workdir(f.workdir)
    records = ics_probe.read_records(workdir)
    for layer in f.layers:
      plots.save(plots.percentile_bands([(records, layer, f'{config.name}: {layer}')]),
                 workdir.probe_plot(layer))
      plots.save(plots.drift_curves({config.name: records}, layer),
                 workdir.probe_plot(layer, drift=True))


if __name__ == '__main__':
  cli.start(main)
