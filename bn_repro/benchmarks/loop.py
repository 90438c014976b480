"""(2) The whole training loop's speed: its input (the config's data.source: tfds records, or
synthetic batches where TensorFlow is missing), prefetch, metrics, NaN checks and checkpoints."""

from __future__ import annotations

import statistics
import tempfile

from bn_repro.loop.train import train_and_evaluate
from bn_repro.workdir import Workdir


def full_loop(config, num_steps: int, checkpoint_every: str | None = None) -> dict:
  """Throughput from the loop's progress reports after the first (which holds the compile),
  with evaluations off and checkpoints every `checkpoint_every` (default: the config's)."""
  config = config.copy_and_resolve_references()
  config.train_for = f'{num_steps} steps'
  config.log_every = f'{max(1, num_steps // 10)} steps'   # ten rate reports
  for name in config.hooks:
    if config.hooks[name].kind in ('evaluate', 'ics_probe'):
      config.hooks[name].every = 'never'
  if checkpoint_every:
    config.hooks.checkpoint.every = checkpoint_every
  with tempfile.TemporaryDirectory() as workdir:
    train_and_evaluate(config, workdir)
    rates = [r['steps_per_sec'] for r in Workdir(workdir).read_metrics()
             if 'steps_per_sec' in r][1:]
  if not rates:
    raise ValueError('too few steps for a progress report after the first; raise --loop_steps')
  images = [r * config.global_batch_size for r in rates]
  return {'source': config.data.source, 'checkpoint_every': config.hooks.checkpoint.every,
          'images': {'median_per_s': statistics.median(images), 'min_per_s': min(images),
                     'max_per_s': max(images), 'reports': len(images)}}
