"""Issue 22's parts (bn_repro/research/parts.py): controls that change exactly what they say,
code identity records and the pooling check, and the report from fabricated runs."""

import dataclasses
import json
import os

import ml_collections
import numpy as np
import pytest

from bn_repro import host
from bn_repro.loop import config_checks
from bn_repro.parallel import device_map
from bn_repro.research import code_identity, parts_report
from bn_repro.research import parts as pt
from bn_repro.research import parts_tables as tb
from bn_repro.research.command_runner import Runner
from bn_repro.training import durations
from bn_repro.workdir import Workdir
from tests.test_reproduce import _config_of, _synthetic_log


def _flat(config, prefix=''):
  out = {}
  for key, value in config.items():
    if hasattr(value, 'items'):
      out.update(_flat(value, f'{prefix}{key}.'))
    else:
      out[f'{prefix}{key}'] = value
  return out


def _config(label, repo_root, plan=pt.FULL, seed=0):
  return _config_of(pt.command(pt.PartRun(label, seed), plan, 'fashion_mnist', '/w'), repo_root)


@pytest.mark.parametrize('control', sorted(pt.CONTROLS))
def test_each_control_changes_exactly_the_fields_it_names(control, repo_root):
  parent, fields = pt.CONTROLS[control]
  a, b = _flat(_config(parent, repo_root)), _flat(_config(control, repo_root))
  assert sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k)) == sorted(fields)


def test_rate_grid_changes_only_the_rate_and_every_part_validates(repo_root, monkeypatch):
  monkeypatch.setattr(device_map, 'device_count', lambda: 2)
  for base in pt.RATE_MODELS:
    a, b = _flat(_config(base, repo_root)), _flat(_config(pt.rate_label(base, 30), repo_root))
    assert {k for k in a if a[k] != b[k]} == {'optimizer.learning_rate'}
    assert b['optimizer.learning_rate'] == pytest.approx(30 * a['optimizer.learning_rate'])
  for plan in (pt.QUICK, pt.FULL):
    slugs = set()
    for part in pt.PARTS:
      for run in pt.part_runs(part, plan):
        slugs.add(run.slug)
        config = _config_of(pt.command(run, plan, 'fashion_mnist', '/w'), repo_root)
        config_checks.validate(config)
        assert durations.parse('', config.train_for).steps(1) == pt.steps_of(run, plan)
    # Shared runs train once: the grid's 1x rates are the controls' and seeds' runs.
    assert 'inception_seed0' in slugs and 'inception__sigmoid_seed0' in slugs
  assert pt.parse_parts('seeds,same_code') == ('same_code', 'seeds')
  with pytest.raises(SystemExit):
    pt.parse_parts('controls,bogus')


def _identity(code='aaaa', jax='0.10.2', cpu=None):
  identity = {'commit': 'c' * 40, 'dirty': False, 'code_hash': code,
              'versions': {'python': '3.11', 'jax': jax}}
  if cpu:
    identity['host'] = {'cpu': cpu, 'machine': 'x86_64'}
  return identity


def test_code_identity_records_and_the_pooling_check(tmp_path, repo_root):
  one, two, old = (str(tmp_path / n) for n in ('one', 'two', 'old'))
  code_identity.record_start(one, _identity(), 0)
  code_identity.record_start(two, _identity(), 0)
  os.makedirs(old)
  check = code_identity.check_pool({'one': one, 'two': two, 'old': old})
  assert check.ok and 'without a code record' in check.note and 'old' in check.note
  code_identity.record_start(two, _identity(jax='0.12.0'), 500)      # resumed under new jax
  assert code_identity.of_run(two).mixed
  check = code_identity.check_pool({'one': one, 'two': two})
  assert not check.ok and 'different code' in check.note
  assert 'resumed under other code' in check.note
  now = code_identity.current(repo_root)
  assert len(now['code_hash']) == 16 and now['versions']['jax'] != 'absent'
  assert now['host']['cpu'] == host.cpu_model()
  assert not any(p.startswith('bn_repro/research/') for p in code_identity.source_files(repo_root))


def test_runs_of_one_code_on_different_cpus_pool_flagged(tmp_path):
  intel, amd, old = (str(tmp_path / n) for n in ('intel', 'amd', 'old'))
  code_identity.record_start(intel, _identity(cpu='Intel Xeon (family 6, model 143)'), 0)
  code_identity.record_start(amd, _identity(cpu='AMD EPYC (family 26, model 2)'), 0)
  code_identity.record_start(old, _identity(), 0)   # recorded before hosts were
  assert code_identity.of_run(amd).cpus == ('AMD EPYC (family 26, model 2)',)
  check = code_identity.check_pool({'intel': intel, 'amd': amd, 'old': old})
  assert check.ok and 'pooled across CPUs' in check.note
  assert 'old: not recorded' in check.note
  partly = code_identity.check_pool({'intel': intel, 'old': old})
  assert partly.ok and 'may be pooled across CPUs' in partly.note and 'old' in partly.note
  second = str(tmp_path / 'second')
  code_identity.record_start(second, _identity(cpu='Intel Xeon (family 6, model 143)'), 0)
  same = code_identity.check_pool({'intel': intel, 'second': second})
  assert same.ok and 'CPUs' not in same.note


def test_the_host_cpu_is_named_with_its_family_and_model(tmp_path):
  cpuinfo = tmp_path / 'cpuinfo'
  cpuinfo.write_text('processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 26\n'
                     'model\t\t: 2\nmodel name\t: AMD EPYC\n\nprocessor\t: 1\n'
                     'model name\t: other\n')
  assert host.cpu_model(str(cpuinfo)) == 'AMD EPYC (family 26, model 2)'
  assert host.cpu_model(str(tmp_path / 'missing'))   # platform's guess, never empty
  arm = tmp_path / 'arm'
  arm.write_text('processor\t: 0\nCPU implementer\t: 0x41\nCPU part\t: 0xd4f\n')
  assert '(implementer 0x41, part 0xd4f)' in host.cpu_model(str(arm))


def test_a_nan_stop_is_recorded_and_never_retried(tmp_path):
  workdir, log = str(tmp_path / 'w'), str(tmp_path / 'run.log')
  os.makedirs(workdir)
  with open(log, 'w', encoding='utf-8') as f:
    f.write('error: loss or gradients became NaN/Inf at step 7 (learning rate 45)\n')
  pt.record_divergence('x', workdir, log, 2)
  assert pt.diverged(workdir)['step'] == 7 and pt.finished(workdir, 1406)
  with open(log, 'w', encoding='utf-8') as f:
    f.write('error: something else\n')
  with pytest.raises(SystemExit, match='failed'):
    pt.record_divergence('x', str(tmp_path), log, 2)


def test_paired_statistics_of_ensembles():
  a = np.array([True] * 10 + [False] * 5)
  b = np.array([True] * 5 + [False] * 10)
  only_a, only_b, p = tb.mcnemar(a, b)
  assert (only_a, only_b) == (5, 0) and p == pytest.approx(2 / 32)
  labels = np.array([0, 1, 2, 0])
  eye = np.eye(3)
  members = {'good': eye[[0, 1, 2, 1]], 'bad': eye[[0, 0, 0, 1]] * 0.9 + 0.05}
  r = tb.ensemble_comparison(members, labels)
  assert r['best_member'] == 'good' and r['best_member_error'] == pytest.approx(0.25)
  assert r['mean_member_error'] == pytest.approx((0.25 + 0.75) / 2)
  lo, hi = tb.paired_bootstrap(np.zeros(50))
  assert lo == hi == 0


def _fake_run(out, label, seed, points, identity, population=None, rate=0.0015):
  workdir = str(out / 'runs' / pt.PartRun(label, seed).slug)
  _synthetic_log(workdir, points)
  if population:
    _synthetic_log(workdir, population, key='eval_population_top1')
  Workdir(workdir).write_config(
      ml_collections.ConfigDict({'optimizer': {'learning_rate': rate, 'lr_scale': 6.0}}))
  with open(Workdir(workdir).results_file, 'w', encoding='utf-8') as f:
    json.dump({'step': points[-1][0], 'eval_top1': points[-1][1]}, f)
  code_identity.record_start(workdir, identity, 0)
  return workdir


def test_a_ratio_has_no_bound_when_seeds_of_both_never_reach_the_target():
  reach = {'eval': ([100, 200], [0.5, 0.9])}
  never = {'eval': ([100, 200], [0.5, 0.6])}
  assert tb.ratio_cell([reach, never], [never, reach], 'EMA', 0.8, 200) == \
      'some seeds of each never reach it'
  assert tb.ratio_cell([never], [never], 'EMA', 0.8, 200) == 'neither reaches it'
  assert tb.ratio_cell([reach, never], [reach, reach], 'EMA', 0.8, 200) == '>=1.00x'


def test_a_contrast_pairs_the_runs_of_one_seed():
  """Seed 1 finished for both models, seed 0 only without: the paired difference at equal
  steps is seed 1's alone, not the first run of each list."""
  def run(top1):
    return {'eval': ([100], [top1]), 'eval_population': ([100], [top1])}
  groups = {'A': [run(0.50), run(0.70)], 'B': [run(0.75)]}
  row, = tb.contrast_rows(groups, [('A vs B', 'A', 'B')], 0.9, 100, fractions=(1.0,),
                          seeds={'A': [0, 1], 'B': [1]})
  assert row['seeds'] == '2/1' and row['at_100'].endswith(': +5.00%')


def test_partial_report_from_fabricated_runs(tmp_path, repo_root):
  """Finished runs give their cells, the others say 'not run yet'; a NaN stop is a failed
  rate; a section pooling runs of different code is refused unless allowed, then flagged."""
  plan = dataclasses.replace(pt.QUICK, seeds=(0,), twin_steps=300, rate_grid=(1, 100))
  out, same = tmp_path / 'out', _identity()
  _fake_run(out, 'Inception', 0, [(100, 0.5), (200, 0.7), (300, 0.8)], same)
  _fake_run(out, 'BN-x5', 0, [(100, 0.7), (200, 0.8), (300, 0.85)], same,
            population=[(100, 0.8), (200, 0.84), (300, 0.86)])
  _fake_run(out, 'BN-x5 without BN', 0, [(100, 0.6), (200, 0.75), (300, 0.82)], same)
  diverged = _fake_run(out, 'Inception at 100x rate', 0, [(100, 0.1)], same, rate=0.15)
  os.remove(Workdir(diverged).results_file)
  with open(os.path.join(diverged, pt.DIVERGED_FILE), 'w', encoding='utf-8') as f:
    json.dump({'step': 3}, f)
  stopped = _fake_run(out, 'BN-x30 without BN', 0, [(100, 0.1)], same)
  os.remove(Workdir(stopped).results_file)
  with open(os.path.join(stopped, pt.DIVERGED_FILE), 'w', encoding='utf-8') as f:
    json.dump({'step': 30}, f)
  runner = Runner(str(out), [], repo_root, dry=True)
  finished = pt.train_parts(runner, pt.PARTS, plan, 'fashion_mnist', same)
  assert len(finished) == 5

  def report(**kwargs):
    refused = parts_report.write(str(out), mode='quick', dataset='fashion_mnist', plan=plan,
                                 parts=pt.PARTS, finished=finished,
                                 reference=str(tmp_path / 'none'), identity=same,
                                 commands=runner.commands, **kwargs)
    return refused, open(out / parts_report.TABLES_FILE, encoding='utf-8').read()

  refused, text = report(allow_mixed_code=False)
  assert not refused
  # BN in BN-x5's recipe: target 0.8 (Inception's best); 300 steps without BN, 200 with BN
  # and EMA statistics, 100 with population statistics; then top-1 at 150 and 300 steps.
  assert ("| BN in BN-x5's recipe | BN-x5 without BN -> BN-x5 | 1/1 | 300 / 200 | 1.50x | "
          '300 / 100 | 3.00x | - vs -: - | 60.00% vs 80.00%: +20.00% | '
          '82.00% vs 86.00%: +4.00% |') in text
  assert '| Inception | 100 | 0.15 | 0.9 | diverged at step 3 |  |' in text
  # A control that stopped on NaN/Inf is a seed that never reaches the target.
  assert ('| BN-x30 without BN | 1 | EMA | stopped on NaN/Inf | stopped on NaN/Inf | '
          'never (0/1) |') in text
  assert 'Stopped on NaN/Inf: BN-x30 without BN seed 0 (step 30).' in text
  assert '| BN-Baseline | 1 | 0.0015 | - | not run yet |  |' in text
  assert '| Inception | 1x |' in text                   # the largest rate that trains
  assert 'not run yet' in text and os.path.exists(out / parts_report.THRESHOLD_PLOT)
  # The verdicts: BN-x5 (population 80% at step 100) against its recipe without BN (82% at
  # 300); the rate grid lacks BN-Baseline, so that claim is untested.
  assert ("| The speed-up is BN's: BN-x5 reaches it before its recipe without BN, with "
          'population statistics | issue 22 | steps to 80.00%, seed 0: BN-x5 without BN 300; '
          'BN-x5 100 | **held (1 seed: no spread)** |') in text
  assert '| BN allows much higher learning rates' in text and \
      'the BN-Baseline rate grid: not run yet | **not tested** |' in text
  summary = json.load(open(out / parts_report.SUMMARY_FILE, encoding='utf-8'))
  assert len(summary['claims']) == text.count('| **')
  code_identity.record_start(str(out / 'runs' / 'bn_x5_seed0'), _identity(code='bbbb'), 200)
  refused, text = report(allow_mixed_code=False)
  assert refused == ['2. Recipe against BN: controls',
                     '7. The claims: held, not held, not tested'] and '**Refused**' in text
  assert json.load(open(out / parts_report.SUMMARY_FILE, encoding='utf-8'))['claims'] == []
  refused, text = report(allow_mixed_code=True)
  assert not refused and '**Flagged: pools runs of different code**' in text
