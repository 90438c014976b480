"""(2) The whole training loop's speed: real input pipeline, metrics, checkpoints as configured."""

from __future__ import annotations

import statistics
import tempfile

from bn_repro.loop.train import train_and_evaluate
from bn_repro.workdir import Workdir


def full_loop(config, num_steps: int) -> dict:
  """Throughput from the loop's progress reports after the first (which holds the compile);
  the final evaluation is not counted."""
  config = config.copy_and_resolve_references()
  config.train_for = f'{num_steps} steps'
  config.hooks.eval.every = 'never'
  with tempfile.TemporaryDirectory() as workdir:
    train_and_evaluate(config, workdir)
    rates = [r['steps_per_sec'] for r in Workdir(workdir).read_metrics()
             if 'steps_per_sec' in r][1:]
  if not rates:
    raise ValueError('too few steps for a progress report after the first; raise --loop_steps')
  images = [r * config.global_batch_size for r in rates]
  return {'images': {'median_per_s': statistics.median(images), 'min_per_s': min(images),
                     'max_per_s': max(images), 'reports': len(images)}}
