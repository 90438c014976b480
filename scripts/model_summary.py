"""Prints a model's per-layer table, parameter count and forward FLOPs.

  python scripts/model_summary.py --config configs/bn_x30.py
  python scripts/model_summary.py --config configs/bn_x30.py --config.model.stem=plain
"""

from absl import flags
from ml_collections import config_flags

from bn_repro import cli
from bn_repro.data.specs import image_shape

config_flags.DEFINE_config_file('config', None, 'Config file.', lock_config=True)
flags.mark_flags_as_required(['config'])
cli.answer_help()   # before the imports below, which load TensorFlow and JAX (seconds)

from bn_repro.models import abstract_variables, build_model  # noqa: E402
from bn_repro.models import summary  # noqa: E402


def main(argv):
  del argv
  config = flags.FLAGS.config
  shape = image_shape(config.data)
  model = build_model(config.model, image_size=shape[0])
  variables = abstract_variables(model, shape)
  rows = summary.layer_rows(model, variables, shape)
  print(f'{config.name}: input {"x".join(map(str, shape))}, '
        f'{config.model.num_classes} classes')
  print(summary.format_table(rows))
  print(f'total params: {summary.count_params(variables["params"])}')
  flops = summary.forward_flops(model, variables, shape)
  if flops is not None:
    print(f'forward FLOPs per image: {flops / 1e9:.3f} G '
          f'(XLA cost analysis; about {flops / 2e9:.3f} G multiply-adds)')


if __name__ == '__main__':
  cli.start(main)
