"""The pieces of scripts/reproduce.py and of the internal-covariate-shift probe, at toy size."""

import json
import os

import jax
import numpy as np
import pytest

from bn_repro import device_map, ics_probe, plots, reproduce
from bn_repro.errors import ConfigError
from bn_repro.input_pipeline.specs import dataset_spec
from bn_repro.metric_logging import JsonLinesWriter
from bn_repro.models import build_model
from bn_repro.steps import standardize
from bn_repro.train import train_and_evaluate


def test_probe_summary_equals_numpy_on_a_known_batch():
  rng = np.random.RandomState(0)
  values = rng.randn(40, 3, 3, 5) * np.arange(1, 6) + np.arange(5)
  summary = ics_probe.summarize(values, unit=2)
  unit_values = values[..., 2].ravel()
  for p in (5, 15, 50, 85, 95):
    assert summary['unit_percentiles'][str(p)] == pytest.approx(np.percentile(unit_values, p))
  assert summary['layer_mean'] == pytest.approx(values.mean())
  assert summary['layer_var'] == pytest.approx(values.var())
  np.testing.assert_allclose(summary['channel_vars'], values.reshape(-1, 5).var(0))
  shifted = ics_probe.summarize(values + 0.5, unit=2)
  d = ics_probe.drift(summary, shifted)
  assert d['drift_mean'] == pytest.approx(0.5)
  assert d['drift_var'] == pytest.approx(0.0, abs=1e-9)
  assert d['drift_w1'] == pytest.approx(0.5)


def test_probe_records_what_the_network_computes(tiny_config, tmp_path):
  """The probe's percentiles equal numpy's over the same pre-activations, computed directly."""
  config = tiny_config
  model = build_model(config.model, image_size=28, sync_bn=True)
  host_model = build_model(config.model, image_size=28)
  from bn_repro import optim
  from bn_repro.train_state import create_train_state
  state = create_train_state(model, optim.make_optimizer(config.optimizer, 10), (28, 28, 1), 0,
                             device_map.replicated_sharding())
  spec = dataset_spec('fashion_mnist')
  rng = np.random.RandomState(1)
  batch = {'image': rng.randint(0, 256, (16, 28, 28, 1)).astype(np.uint8),
           'label': np.zeros(16, np.int32), 'mask': np.arange(16) < 12}
  probe = ics_probe.Probe(str(tmp_path), model, spec, ['inception_3a/b1x1'], batch,
                          every_steps=5, unit=1)
  assert probe.due(0) and probe.due(5) and not probe.due(3)
  probe.record(0, state.variables())
  (record,) = ics_probe.read_records(str(tmp_path))

  # Direct: one device, the 12 real examples, batch statistics over them.
  # (The probe's BN batch is all 16 examples: compare over the same 16.)
  _, out = jax.jit(lambda v, x: host_model.apply(v, x, train=False, stats='batch',
                                                  mutable=['preactivations']))(
      device_map.to_host(state.variables()), standardize(batch['image'], spec))
  values = np.asarray(out['preactivations']['inception_3a']['b1x1']['x'])[:12]
  expected = np.percentile(values[..., 1].ravel(), [15, 50, 85])
  got = [record['unit_percentiles'][k] for k in ('15', '50', '85')]
  np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_unknown_probe_layer_lists_the_choices(tiny_config, tmp_path):
  config = tiny_config
  config.probe.layers = ('inception_9z/b1x1',)
  with pytest.raises(ConfigError, match="'inception_9z/b1x1' is not a layer.*inception_3a/b1x1"):
    train_and_evaluate(config, str(tmp_path))


def _synthetic_log(workdir, points, key='eval_top1'):
  os.makedirs(workdir, exist_ok=True)
  writer = JsonLinesWriter(os.path.join(workdir, 'metrics.jsonl'))
  for step, value in points:
    writer.write_scalars(step, {'train_loss': 1.0})
    writer.write_scalars(step, {key: value})
  writer.close()


def test_steps_to_target_table_from_synthetic_logs(tmp_path):
  _synthetic_log(tmp_path / 'inception', [(100, 0.5), (200, 0.7), (300, 0.8), (400, 0.78)])
  _synthetic_log(tmp_path / 'bn', [(100, 0.79), (200, 0.81), (300, 0.85)])
  _synthetic_log(tmp_path / 'bn', [(100, 0.80), (200, 0.83)], key='eval_population_top1')
  _synthetic_log(tmp_path / 'slow', [(100, 0.1), (200, 0.2)])
  curves = {'Inception': {'ema': reproduce.eval_curve(str(tmp_path / 'inception'))},
            'BN-x5': {'ema': reproduce.eval_curve(str(tmp_path / 'bn')),
                      'population': reproduce.eval_curve(str(tmp_path / 'bn'),
                                                         'eval_population_top1')},
            'BN-x5-Sigmoid': {'ema': reproduce.eval_curve(str(tmp_path / 'slow'))}}
  rows = {r['model']: r for r in reproduce.figure3_rows(curves, 'Inception')}
  assert rows['Inception']['target'] == 0.8
  assert rows['Inception']['steps_ema'] == 300
  assert rows['BN-x5']['steps_ema'] == 200 and rows['BN-x5']['best_ema'] == 0.85
  assert rows['BN-x5']['steps_population'] == 100
  assert rows['BN-x5-Sigmoid']['steps_ema'] is None
  table = reproduce.figure3_markdown(list(rows.values()), {'BN-x5': 0.075})
  assert '| BN-x5 | 0.075 | 200 | 100 | 0.8500 | 0.8300 | 2.1e6 | 73.0% |' in table
  assert '| BN-x5-Sigmoid | 0 | never |' in table


def test_plots_are_written(tmp_path):
  records = []
  for step in (0, 10, 20):
    s = ics_probe.summarize(np.random.RandomState(step).randn(50, 4) + step / 10, unit=0)
    records.append({'step': step, 'layer': 'hidden3', **s})
  for previous, current in zip(records, records[1:]):
    current.update(ics_probe.drift(previous, current))
  plots.accuracy_curves({'a': ([1, 2, 3], [0.1, 0.5, 0.7]), 'b': ([1, 2], [0.2, 0.3])},
                        str(tmp_path / 'acc.png'), title='t')
  plots.percentile_bands([(records, 'hidden3', 'x'), (records, 'hidden3', 'y')],
                         str(tmp_path / 'bands.png'))
  plots.drift_curves({'run': records}, 'hidden3', str(tmp_path / 'drift.png'))
  for name in ('acc.png', 'bands.png', 'drift.png'):
    with open(tmp_path / name, 'rb') as f:
      assert f.read(8) == b'\x89PNG\r\n\x1a\n'


def test_figure4_table_formats_errors():
  table = reproduce.figure4_markdown([{'model': 'm', 'crops': 144, 'models': 2, 'examples': 10,
                                       'top1_error': 0.1234, 'top5_error': 0.01}])
  assert '| m | 144 | 2 | 10 | 12.34% | 1.00% |' in table
  assert json.dumps(reproduce.dataclasses.asdict(reproduce.QUICK))
  assert reproduce.FULL.twin_steps > reproduce.QUICK.twin_steps
