"""Internal-covariate-shift probe: how the inputs of chosen nonlinearities move during training.

At regular steps the network runs on one fixed probe batch (training-mode BN
statistics, as the nonlinearity sees them while training) and, for each chosen
layer, records:
- the 15th/50th/85th percentiles (and 5th/95th) of one fixed unit's input
  over the batch (and positions): the paper's Figure 1(b, c);
- the mean and variance of the layer's inputs, and the per-channel means and
  variances;
- the drift since the previous record: mean absolute change of the
  per-channel means and variances, and the 1-D Wasserstein-1 distance of the
  fixed unit's distribution (mean absolute difference of its quantiles).

Records go to the workdir's probe file (Workdir.probe_file), one JSON line per
(step, layer).
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from bn_repro import files
from bn_repro.data.on_device import standardize
from bn_repro.errors import ConfigError
from bn_repro.models import abstract_variables
from bn_repro.models.layers import PREACTIVATIONS
from bn_repro.parallel import device_map
from bn_repro.workdir import Workdir, read_json_lines

PERCENTILES = (5, 15, 50, 85, 95)
_QUANTILES = np.linspace(0.01, 0.99, 99)


def unit_layers(model, image_shape) -> list[str]:
  """Names of every layer whose nonlinearity input can be probed, in forward order."""
  variables = abstract_variables(model, image_shape)
  image = jax.ShapeDtypeStruct((2,) + tuple(image_shape), jnp.float32)
  _, state = jax.eval_shape(
      lambda v, x: model.apply(v, x, mutable=[PREACTIVATIONS]), variables, image)
  return ['/'.join(path[:-1]) for path in traverse_util.flatten_dict(state[PREACTIVATIONS])]


def check_layers(layers, available) -> None:
  unknown = [layer for layer in layers if layer not in available]
  if unknown:
    raise ConfigError(f'probe layer {unknown[0]!r} is not a layer of this model; '
                      f'choose from: {", ".join(available)}')


def make_probe_step(model, spec):
  """(variables, batch) -> the batch's pre-activations of every unit, gathered per device."""

  def step(variables, batch):
    _, state = model.apply(variables, standardize(batch['image'], spec), train=False,
                           stats='batch', mutable=[PREACTIVATIONS])
    return state[PREACTIVATIONS]

  return device_map.map_over_devices(step, in_axes=(None, 0), out_axes=0)


def summarize(values: np.ndarray, unit: int) -> dict:
  """Statistics of one layer's inputs, values [examples, ..., channels]."""
  flat = values.reshape(-1, values.shape[-1]).astype(np.float64)
  unit_values = flat[:, unit % flat.shape[1]]
  return {
      'unit': int(unit % flat.shape[1]),
      'unit_percentiles': {str(p): float(v) for p, v in
                           zip(PERCENTILES, np.percentile(unit_values, PERCENTILES))},
      'unit_quantiles': np.quantile(unit_values, _QUANTILES).tolist(),
      'layer_mean': float(flat.mean()), 'layer_var': float(flat.var()),
      'channel_means': flat.mean(0).tolist(), 'channel_vars': flat.var(0).tolist(),
  }


def drift(previous: dict, current: dict) -> dict:
  """Change between two summaries of the same layer."""
  return {
      'drift_mean': float(np.mean(np.abs(np.subtract(current['channel_means'],
                                                     previous['channel_means'])))),
      'drift_var': float(np.mean(np.abs(np.subtract(current['channel_vars'],
                                                    previous['channel_vars'])))),
      'drift_w1': float(np.mean(np.abs(np.subtract(current['unit_quantiles'],
                                                   previous['unit_quantiles'])))),
  }


class Probe:
  """Records the chosen layers when asked to; a resumed run skips the steps already recorded."""

  def __init__(self, workdir: Workdir, model, spec, layers, probe_batch: dict, *, unit: int = 0):
    self.path = workdir.probe_file
    self.layers = list(layers)
    self.unit = unit
    self._step_fn = make_probe_step(model, spec)
    self._batch = device_map.shard(probe_batch)
    self._mask = device_map.gather_to_host(self._batch['mask'])
    self._previous = {}
    done = set()
    if files.exists(self.path):
      for record in read_records(workdir):
        self._previous[record['layer']] = record
        done.add(record['step'])
    self._done = done

  def has_record(self, step: int) -> bool:
    return step in self._done

  def record(self, step: int, variables) -> None:
    outputs = self._step_fn(variables, self._batch)
    flat = traverse_util.flatten_dict(outputs)
    lines = []
    for layer in self.layers:
      values = device_map.gather_to_host(flat[tuple(layer.split('/')) + ('x',)])
      values = values[self._mask]
      summary = summarize(values, self.unit)
      record = {'step': step, 'layer': layer, **summary}
      if layer in self._previous:
        record.update(drift(self._previous[layer], summary))
      self._previous[layer] = record
      lines.append(json.dumps(record))
    self._done.add(step)
    if device_map.process_index() == 0:
      files.append_text(self.path, '\n'.join(lines) + '\n')


def read_records(workdir: Workdir) -> list[dict]:
  return read_json_lines(workdir.probe_file)
