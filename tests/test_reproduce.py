"""The pieces of the small-scale reproduction (bn_repro/research/) and of the
internal-covariate-shift probe, at toy size."""

import dataclasses
import importlib
import json
import os
import shlex

import jax
import ml_collections
import numpy as np
import pytest

from bn_repro.data.on_device import standardize
from bn_repro.errors import ConfigError, UserError
from bn_repro.models import build_model
from bn_repro.parallel import device_map
from bn_repro.evaluation import ics_probe
from bn_repro.research import command_runner, figure4, figures, plots, reproduce
from bn_repro.loop import config_checks
from bn_repro.training import durations
from bn_repro.loop.hooks import Hook
from bn_repro.loop.train import train_and_evaluate
from bn_repro.training.metric_writers import JsonLinesWriter
from bn_repro.training.recipes import TrainingRecipe
from bn_repro.workdir import Workdir
from configs import small_scale


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
  writer = JsonLinesWriter(Workdir(str(workdir)).metrics_file)
  for step, value in points:
    writer.write_scalars(step, {'train_loss': 1.0})
    writer.write_scalars(step, {key: value})
  writer.close()


def test_steps_to_target_table_over_seeds_from_synthetic_logs(tmp_path):
  _synthetic_log(tmp_path / 'inception0', [(100, 0.5), (200, 0.7), (300, 0.8), (400, 0.78)])
  _synthetic_log(tmp_path / 'inception1', [(100, 0.6), (200, 0.74), (300, 0.76), (400, 0.78)])
  _synthetic_log(tmp_path / 'bn0', [(100, 0.79), (200, 0.81), (300, 0.85)])
  _synthetic_log(tmp_path / 'bn0', [(100, 0.80), (200, 0.83), (300, 0.84)],
                 key='eval_population_top1')
  _synthetic_log(tmp_path / 'bn1', [(100, 0.70), (200, 0.75), (300, 0.86)])
  _synthetic_log(tmp_path / 'bn1', [(100, 0.75), (200, 0.78), (300, 0.82)],
                 key='eval_population_top1')
  _synthetic_log(tmp_path / 'slow', [(100, 0.1), (200, 0.2)])
  _synthetic_log(tmp_path / 'slow', [(100, 0.1), (200, 0.3)], key='eval_population_top1')

  def curves(name):
    return {m: reproduce.eval_curve(str(tmp_path / name), f'{m}_top1')
            for m in ('eval', 'eval_population')}

  seeds = {'Inception': [curves('inception0'), curves('inception1')],
           'BN-x5': [curves('bn0'), curves('bn1')], 'BN-x5-Sigmoid': [curves('slow')]}
  target = (0.8 + 0.78) / 2    # the mean over seeds of Inception's best
  rows = {r['model']: r for r in reproduce.model_rows(seeds, target)}
  x5 = rows['BN-x5']['eval_population']
  assert (x5['steps'].mean, x5['steps'].low, x5['steps'].high) == (200, 100, 300)
  assert x5['best'].mean == pytest.approx(0.83) and x5['best'].count == 2
  assert rows['Inception']['eval']['steps'].count == 1     # seed 1 never reached 0.79
  assert 'eval_population' not in rows['Inception']
  table = reproduce.figure3_markdown(list(rows.values()), target, {'BN-x5': 0.075})
  assert ('| BN-x5 | 2 | 0.075 | 200 (100-300) | 0.8300 (0.8200-0.8400) | 0.8300 (0.8200-0.8400) '
          '| 2.1e6 | 73.0% |') in table
  assert '| Inception | 2 | 0 | 300 (300-300), 1/2 reached |' in table
  assert '| BN-x5-Sigmoid | 1 | 0 | never | 0.3000 | 0.3000 |' in table
  # The swing between evaluations: mean |change| over the second half of each curve.
  assert reproduce.swing([0.1, 0.2, 0.5, 0.4, 0.6]) == pytest.approx((0.1 + 0.2) / 2)
  assert '| BN-x5 | population |' in reproduce.statistics_markdown([rows['BN-x5']])


def _probe_records(layers):
  records = []
  for layer in layers:
    previous = None
    for step in (0, 10, 20):
      record = {'step': step, 'layer': layer,
                **ics_probe.summarize(np.random.RandomState(step).randn(50, 4), unit=0)}
      if previous:
        record.update(ics_probe.drift(previous, record))
      records.append(record)
      previous = record
  return records


def _finished_run(workdir, probe_layers=()):
  """A workdir as a finished twin leaves it, for the figures: config, metrics, probe records."""
  _synthetic_log(workdir, [(50, 0.5), (100, 0.7)])
  _synthetic_log(workdir, [(50, 0.6), (100, 0.8)], key='eval_population_top1')
  config = ml_collections.ConfigDict({'optimizer': {'learning_rate': 0.01, 'lr_scale': 2.0}})
  Workdir(str(workdir)).write_config(config)
  if probe_layers:
    with open(Workdir(str(workdir)).probe_file, 'w', encoding='utf-8') as f:
      f.writelines(json.dumps(r) + '\n' for r in _probe_records(probe_layers))
  return str(workdir)


def test_one_seed_figures_show_the_plans_first_seed():
  """The probe figures and the other one-seed comparisons pick the plan's first seed,
  whichever it is (only that seed's twins are probed)."""
  plan = dataclasses.replace(reproduce.QUICK, seeds=(1, 2))
  Run = reproduce.Run
  finished = {Run('Inception', 1): 'i1', Run('Inception', 2): 'i2', Run('BN-x5', 1): 'x1',
              Run('BN-x5', 1, 'long'): 'x1_long', Run('BN-x5', 2): 'x2', Run('BN-x30', 1): 'y1'}
  assert figures.first_seed_runs(finished, plan, reproduce.PROBE_TWINS) == {
      'Inception': 'i1', 'BN-x5': 'x1'}
  assert figures.first_seed_runs(finished, dataclasses.replace(plan, seeds=(2, 1)),
                                 reproduce.PROBE_TWINS) == {'Inception': 'i2', 'BN-x5': 'x2'}


def test_probe_figures_are_drawn_for_a_plan_without_seed_0(tmp_path):
  """The twins' probe figures come from the runs the plan probes (the first seed's)."""
  plan = dataclasses.replace(reproduce.QUICK, seeds=(1, 2))
  finished = {}
  for run in reproduce.plan_runs(plan):
    if run.model in reproduce.TWINS and not run.variant:
      probed = reproduce.command(run, plan, 'fashion_mnist', '/w')[0] == 'scripts/ics_probe.py'
      finished[run] = _finished_run(tmp_path / 'runs' / run.slug,
                                    reproduce.PROBE_LAYERS if probed else ())
  out = tmp_path / 'results'
  rows, learning_rates, _ = figures.figures2_3(str(out), plan, finished, 'fashion_mnist')
  assert {r['model'] for r in rows} == set(reproduce.TWINS)
  assert learning_rates['BN-x5'] == pytest.approx(0.02)
  for layer in reproduce.PROBE_LAYERS:
    for drift in (False, True):
      assert os.path.getsize(out / figures.probe_file(layer, drift=drift)) > 1000


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

  fig = plots.mean_curves({'m': [([1, 2, 3], [0.1, 0.5, 0.7]), ([1, 2, 3], [0.3, 0.3, 0.9])]},
                          title='t')
  np.testing.assert_allclose(fig.axes[0].lines[0].get_xydata(), [[1, 0.2], [2, 0.4], [3, 0.8]])
  band = fig.axes[0].collections[0].get_paths()[0].vertices
  assert band[:, 1].min() == pytest.approx(0.1) and band[:, 1].max() == pytest.approx(0.9)

  fig = plots.drift_curves({'run': records}, 'hidden3')
  w1 = fig.axes[0].lines[0].get_xydata()
  np.testing.assert_allclose(w1, [[r['step'], r['drift_w1']] for r in records[1:]])


def test_figure4_table_formats_errors():
  table = reproduce.figure4_markdown([{'model': 'm', 'crops': 144, 'models': 2, 'examples': 10,
                                       'top1_error': 0.1234, 'top5_error': 0.01}])
  assert '| m | 144 | 2 | 10 | 12.34% | 1.00% |' in table


def _config_of(command, repo_root):
  """The config a reproduction command trains with: its file plus its --config.* overrides."""
  file, *arg = command[command.index('--config') + 1].split(':', 1)   # as config_flags splits
  module = importlib.import_module(file[:-3].replace('/', '.'))
  config = module.get_config(*arg)
  for arg in command:
    if arg.startswith('--config.'):
      path, value = arg[len('--config.'):].split('=', 1)
      *parents, leaf = path.split('.')
      node = config
      for parent in parents:
        node = node[parent]
      old = node[leaf]
      if isinstance(old, bool):       # as config_flags parses it: bool('False') is True
        assert value in ('True', 'False'), arg
        node[leaf] = value == 'True'
      else:
        node[leaf] = type(old)(value) if not isinstance(old, str) else value
  assert os.path.exists(os.path.join(repo_root, file))
  return config


def test_figure4_ensemble_files_are_named_back_readably(repo_root):
  stem = figure4.output_stem(figure4.x30_seeds_label(3), 1)
  assert os.path.exists(os.path.join(repo_root, 'results', 'full', 'eval', stem + '.json'))
  assert figure4.label_of(stem, 3, 1) == 'ensemble of BN-x30, 3 seeds (1 crop)'
  four = figure4.output_stem(figure4.FOUR_TWINS, 10)
  assert figure4.label_of(four, 4, 10) == figure4.FOUR_TWINS + ' (10 crops)'
  assert figure4.label_of(stem, 2, 1) == stem     # not the 2-seed ensemble's file


def test_small_scale_config_takes_model_and_dataset():
  """configs/small_scale.py:MODEL[,DATASET]: Fashion-MNIST by default, names as the runs'
  workdirs know them, and a bad argument names the choices."""
  assert small_scale.get_config('bn_x30').name == 'fashion_mnist_bn_x30'
  assert small_scale.get_config('bn_x30') == small_scale.get_config('bn_x30,fashion_mnist')
  mlp = small_scale.get_config('mlp_bn,mnist')
  assert (mlp.name, mlp.data.dataset, mlp.model.batch_norm) == ('mnist_mlp_bn', 'mnist', True)
  for bad in ('', 'bn_x7', 'bn_x30,cifar10', 'bn_x30,mnist,extra'):
    with pytest.raises(UserError, match='one of inception, .*, mlp_bn and DATASET one of '
                                        'fashion_mnist, mnist$'):
      small_scale.get_config(bad)


@pytest.mark.parametrize('plan_name', ['QUICK', 'FULL'])
@pytest.mark.parametrize('dataset', ['fashion_mnist', 'mnist'])
def test_reproduction_commands_give_valid_configs(plan_name, dataset, repo_root, monkeypatch):
  """Every run of both plans names an existing config of the right dataset, and its
  overrides give a config that validates and trains for the plan's steps."""
  monkeypatch.setattr(device_map, 'device_count', lambda: 2)   # as `make reproduce` runs
  plan = getattr(reproduce, plan_name)
  runs = reproduce.plan_runs(plan)
  assert len({run.slug for run in runs}) == len(runs)        # one workdir each
  for run in runs:
    command = reproduce.command(run, plan, dataset, '/tmp/w')
    config = _config_of(command, repo_root)
    with config.unlocked():
      config.hooks.ics_probe.layers = ('hidden3',) if run.is_mlp else reproduce.PROBE_LAYERS
    config_checks.validate(config)
    assert config.data.dataset == dataset and config.name.startswith(dataset)
    assert config.seed == run.seed
    assert config.model.batch_norm == (run.model.startswith('BN') or run.model == 'MLP with BN')
    assert config.model.bn.group_size == (1 if run.variant == 'per-replica BN' else 0)
    assert durations.parse('', config.train_for).steps(1) == reproduce.run_steps(run, plan)
    if not run.is_mlp:
      assert config.hooks.eval_population.num_batches == plan.eval_population_batches
  seeded = [r for r in runs if r.model == 'BN-x5' and not r.variant]
  assert [r.seed for r in seeded] == list(plan.seeds)


def test_hook_cadence():
  every_five = Hook('h', every_steps=5, at_end_only=False)
  assert every_five.due(0) and every_five.due(5) and not every_five.due(3)
  assert not every_five.due(7, final=True)           # runs_at_end is off for a bare Hook
  only_at_end = Hook('h', every_steps=0, at_end_only=True)
  assert not only_at_end.due(10) and only_at_end.due(10, final=True)


def test_recorded_commands_paste_into_a_shell_at_the_repo_root(repo_root, tmp_path):
  """commands.md lists each command as typed in the repository root: quoted where an
  argument has a space ('1406 steps'), with paths relative to the root."""
  runner = command_runner.Runner(str(tmp_path), [], repo_root, dry=True)
  workdir = os.path.join(repo_root, 'results', 'full', 'runs', 'bn_x5_seed0')
  runner.command('BN-x5', 'scripts/train.py', '--workdir', workdir,
                 '--config.train_for=1406 steps')
  (name, line), = runner.commands
  assert name == 'BN-x5'
  assert shlex.split(line) == ['python', 'scripts/train.py', '--workdir',
                               'results/full/runs/bn_x5_seed0', '--config.train_for=1406 steps']


def test_figure4_outputs_are_reused_only_for_the_same_runs_as_they_are(tmp_path):
  """A resumed reproduction makes a Figure 4 evaluation again when its output names other
  runs (e.g. left from an earlier plan) or predates a member's final results."""
  runs = [str(tmp_path / name) for name in ('bn_x30_seed0', 'bn_x30_seed1')]
  for run in runs:
    Workdir(run).create()
    with open(Workdir(run).results_file, 'w', encoding='utf-8') as f:
      f.write('{}')
    os.utime(Workdir(run).results_file, (1_000, 1_000))
  out = str(tmp_path / 'ensemble.json')
  assert not figure4.evaluated(out, runs)
  with open(out, 'w', encoding='utf-8') as f:
    json.dump({'rows': [{'workdir': w} for w in runs] + [{'workdir': ''}]}, f)
  os.utime(out, (2_000, 2_000))
  assert figure4.evaluated(out, runs)
  assert not figure4.evaluated(out, runs[:1])                            # other runs
  assert not figure4.evaluated(out, [runs[0], str(tmp_path / 'bn_x30')])
  os.utime(Workdir(runs[1]).results_file, (3_000, 3_000))                # retrained since
  assert not figure4.evaluated(out, runs)
