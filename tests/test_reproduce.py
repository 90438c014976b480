"""The pieces of scripts/reproduce.py and of the internal-covariate-shift probe, at toy size."""

import importlib
import os

import jax
import ml_collections
import numpy as np
import pytest

from bn_repro.data.on_device import standardize
from bn_repro.errors import ConfigError
from bn_repro.models import build_model
from bn_repro.parallel import device_map
from bn_repro.research import ics_probe, plots, reproduce
from bn_repro.training import config_checks, durations
from bn_repro.training.hooks import Hook
from bn_repro.training.loop import train_and_evaluate
from bn_repro.training.metrics import JsonLinesWriter
from bn_repro.training.recipe import TrainingRecipe
from bn_repro.workdir import Workdir


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
  recipe = TrainingRecipe(config, steps_per_epoch=10)
  host_model = build_model(config.model, image_size=28)
  state = recipe.init_state()
  spec = recipe.spec
  rng = np.random.RandomState(1)
  batch = {'image': rng.randint(0, 256, (16, 28, 28, 1)).astype(np.uint8),
           'label': np.zeros(16, np.int32), 'mask': np.arange(16) < 12}
  probe = ics_probe.Probe(Workdir(str(tmp_path)), recipe.model, spec, ['inception_3a/b1x1'],
                          batch, unit=1)
  assert not probe.has_record(0)
  probe.record(0, state.variables())
  assert probe.has_record(0)
  (record,) = ics_probe.read_records(Workdir(str(tmp_path)))

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
  config.hooks.ics_probe.layers = ('inception_9z/b1x1',)
  config.hooks.ics_probe.every = '2 steps'
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


def test_plots_show_the_data_they_are_given(tmp_path):
  records = []
  for step in (0, 10, 20):
    s = ics_probe.summarize(np.random.RandomState(step).randn(50, 4) + step / 10, unit=0)
    records.append({'step': step, 'layer': 'hidden3', **s})
  for previous, current in zip(records, records[1:]):
    current.update(ics_probe.drift(previous, current))

  fig = plots.accuracy_curves({'a': ([1, 2, 3], [0.1, 0.5, 0.7]), 'b': ([1, 2], [0.2, 0.3])},
                              title='t')
  lines = {line.get_label(): line.get_xydata().tolist() for line in fig.axes[0].lines}
  assert lines == {'a': [[1, 0.1], [2, 0.5], [3, 0.7]], 'b': [[1, 0.2], [2, 0.3]]}
  plots.save(fig, str(tmp_path / 'acc.png'))
  assert os.path.getsize(tmp_path / 'acc.png') > 1000

  fig = plots.percentile_bands([(records, 'hidden3', 'x'), (records, 'hidden3', 'y')])
  assert [ax.get_title() for ax in fig.axes] == ['x', 'y']
  median = fig.axes[0].lines[0].get_xydata()
  np.testing.assert_allclose(median, [[r['step'], r['unit_percentiles']['50']] for r in records])
  band = fig.axes[0].collections[0].get_paths()[0].vertices
  lows = [r['unit_percentiles']['15'] for r in records]
  highs = [r['unit_percentiles']['85'] for r in records]
  assert band[:, 1].min() == pytest.approx(min(lows))
  assert band[:, 1].max() == pytest.approx(max(highs))

  fig = plots.drift_curves({'run': records}, 'hidden3')
  w1 = fig.axes[0].lines[0].get_xydata()
  np.testing.assert_allclose(w1, [[r['step'], r['drift_w1']] for r in records[1:]])


def test_figure4_table_formats_errors():
  table = reproduce.figure4_markdown([{'model': 'm', 'crops': 144, 'models': 2, 'examples': 10,
                                       'top1_error': 0.1234, 'top5_error': 0.01}])
  assert '| m | 144 | 2 | 10 | 12.34% | 1.00% |' in table


def _config_of(command, repo_root):
  """The config a reproduction command trains with: its file plus its --config.* overrides."""
  file = command[command.index('--config') + 1]
  module = importlib.import_module(file[:-3].replace('/', '.'))
  config = module.get_config()
  for arg in command:
    if arg.startswith('--config.'):
      path, value = arg[len('--config.'):].split('=', 1)
      *parents, leaf = path.split('.')
      node = config
      for parent in parents:
        node = node[parent]
      old = node[leaf]
      node[leaf] = type(old)(value) if not isinstance(old, str) else value
  assert os.path.exists(os.path.join(repo_root, file))
  return config


@pytest.mark.parametrize('plan_name', ['QUICK', 'FULL'])
@pytest.mark.parametrize('dataset', ['fashion_mnist', 'mnist'])
def test_reproduction_commands_give_valid_configs(plan_name, dataset, repo_root, monkeypatch):
  """Every run of both plans names an existing config of the right dataset, and its
  overrides give a config that validates and trains for the plan's steps."""
  monkeypatch.setattr(device_map, 'device_count', lambda: 2)   # as `make reproduce` runs
  plan = getattr(reproduce, plan_name)
  for batch_norm in (False, True):
    command = reproduce.mlp_command(plan, dataset, batch_norm, '/tmp/w')
    config = _config_of(command, repo_root)
    config_checks.validate(config)
    assert config.model.batch_norm == batch_norm and config.data.dataset == dataset
    assert durations.parse('', config.train_for).steps(1) == plan.mlp_steps
  for name in reproduce.TWINS:
    command = reproduce.twin_command(plan, dataset, name, '/tmp/w')
    config = _config_of(command, repo_root)
    with config.unlocked():
      config.hooks.ics_probe.layers = tuple(reproduce.PROBE_LAYERS)
    config_checks.validate(config)
    assert config.data.dataset == dataset and config.name.startswith(dataset)
    assert config.model.batch_norm == name.startswith('BN')
    assert durations.parse('', config.train_for).steps(1) == plan.twin_steps
    assert config.hooks.eval_population.num_batches == plan.eval_population_batches


def test_hook_cadence():
  every_five = Hook('h', every_steps=5, at_end_only=False)
  assert every_five.due(0) and every_five.due(5) and not every_five.due(3)
  assert not every_five.due(7, final=True)           # runs_at_end is off for a bare Hook
  only_at_end = Hook('h', every_steps=0, at_end_only=True)
  assert not only_at_end.due(10) and only_at_end.due(10, final=True)
