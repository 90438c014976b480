"""The report's verdicts (bn_repro/research/claims.py) from fabricated outcomes: pairing by
seed, ties, never-reached targets, failed runs, an unfinished grid, the reference claims."""

import dataclasses

import pytest

from bn_repro.research import claims
from bn_repro.research import parts as pt
from bn_repro.research import parts_tables as tb


def _run(points, outcome='trains', population=None):
  steps, values = [s for s, _ in points], [v for _, v in points]
  curves = {'eval': (steps, values)}
  if population:
    curves['eval_population'] = ([s for s, _ in population], [v for _, v in population])
  final = (population or points)[-1][1]
  return claims.Outcome(outcome, curves, final)


SLOW = [(100, 0.5), (200, 0.7), (300, 0.8)]
FAST = [(100, 0.7), (200, 0.8), (300, 0.85)]


def test_fewer_steps_pairs_seeds_and_a_tie_is_not_sooner():
  runs = {'A': {0: _run(SLOW), 1: _run(SLOW), 2: _run(SLOW)},
          'B': {0: _run(FAST), 1: _run(SLOW), 5: _run(FAST)}}
  c = claims.fewer_steps(runs, 'A', 'B', 'EMA', 0.8, claim='B is faster', source='test')
  # Seeds 0 and 1 only (seed 5 has no partner); seed 1 ties at step 300.
  assert c.verdict == 'held in 1 of 2 seeds'
  assert c.evidence == 'steps to 80.00%, seeds 0, 1: A 300, 300; B 200, 300'
  assert c.claim == 'B is faster, with EMA statistics'


def test_a_target_the_slow_model_never_reaches_counts_for_the_fast_one():
  runs = {'A': {0: _run(SLOW)}, 'B': {0: _run(FAST)}}
  c = claims.fewer_steps(runs, 'A', 'B', 'EMA', 0.85, claim='c', source='s')
  assert c.verdict == 'held (1 seed: no spread)' and 'A never; B 300' in c.evidence
  c = claims.fewer_steps(runs, 'A', 'B', 'EMA', 0.9, claim='c', source='s')
  assert c.verdict == 'not held (1 seed)'      # neither reaches it
  assert claims.fewer_steps(runs, 'A', 'C', 'EMA', 0.8, claim='c', source='s').verdict == \
      claims.NOT_TESTED
  assert claims.fewer_steps(runs, 'A', 'B', 'EMA', None, claim='c',
                            source='s').verdict == claims.NOT_TESTED


def test_population_statistics_are_read_where_the_model_has_them():
  runs = {'A': {0: _run(SLOW)},
          'B': {0: _run(SLOW, population=[(100, 0.82), (200, 0.83), (300, 0.84)])}}
  ema = claims.fewer_steps(runs, 'A', 'B', 'EMA', 0.8, claim='c', source='s')
  population = claims.fewer_steps(runs, 'A', 'B', 'population', 0.8, claim='c', source='s')
  assert ema.verdict == 'not held (1 seed)' and population.verdict.startswith('held')


def test_trains_and_fails_and_every_seed_above():
  chance = claims.Outcome('at chance', {'eval': ([300], [0.1])}, 0.1)
  nan = claims.Outcome('diverged at step 3', None, None)
  runs = {'BN': {0: _run(FAST), 1: _run(FAST)},
          'no BN': {0: chance, 1: _run(SLOW + [(400, 0.86)])},
          'rate': {0: nan}}
  c = claims.trains_and_fails(runs, 'BN', 'no BN', claim='c', source='s')
  assert c.verdict == 'held in 1 of 2 seeds' and 'seed 0 at chance (10.00%)' in c.evidence
  assert claims.trains_and_fails(runs, None, 'rate', claim='c', source='s').verdict == \
      'held (1 seed: no spread)'
  above = claims.every_seed_above(runs, 'no BN', ('BN',), claim='c', source='s')
  assert above.verdict == 'not held'             # 85% is not above no-BN seed 1's 86%
  runs['no BN'][1] = _run(SLOW)
  assert claims.every_seed_above(runs, 'no BN', ('BN',), claim='c', source='s').verdict == 'held'


def test_higher_rates_needs_the_whole_grid():
  plan = dataclasses.replace(pt.QUICK, seeds=(0,), rate_grid=(1, 10))
  chance = claims.Outcome('at chance', {'eval': ([300], [0.1])}, 0.1)
  runs = {'Inception': {0: _run(SLOW)}, 'Inception at 10x rate': {0: chance},
          'BN-Baseline': {0: _run(FAST)}}
  assert claims.higher_rates(runs, plan).verdict == claims.NOT_TESTED
  runs['BN-Baseline at 10x rate'] = {0: _run(FAST)}
  c = claims.higher_rates(runs, plan)
  assert c.verdict == 'held (1 seed: no spread)' and 'Inception 1x, BN-Baseline 10x' in c.evidence
  runs['BN-Baseline at 10x rate'] = {0: chance}
  assert claims.higher_rates(runs, plan).verdict == 'not held (1 seed)'


def test_converged_claims_use_inceptions_plateau():
  plan = dataclasses.replace(pt.QUICK, plateau_evals=2)
  inception = [(100, 0.6), (200, 0.78), (300, 0.8), (400, 0.82)]   # plateau 0.81
  bn = [(100, 0.79), (200, 0.81), (300, 0.83), (400, 0.84)]
  runs = {'Inception, 10 epochs': {0: _run(inception)}, 'BN-x5, 10 epochs': {0: _run(bn)}}
  assert claims.plateau_target(runs, plan) == pytest.approx(0.81)
  made = {c.claim: c for c in claims.from_parts(runs, plan)}
  bn_x5 = next(c for k, c in made.items() if k.startswith('BN-x5 reaches Inception\'s conv'))
  assert bn_x5.verdict == 'held (1 seed: no spread)'
  assert 'Inception, 10 epochs 400; BN-x5, 10 epochs 200' in bn_x5.evidence
  assert all(c.verdict == claims.NOT_TESTED for k, c in made.items() if 'BN-Baseline' in k)


def test_reference_claims_ensembles_and_the_mlps():
  def ensemble(ensemble_error, best, p):
    return {'members': 3, 'images': 100, 'ensemble_error': ensemble_error,
            'best_member_error': best, 'mean_member_error': 0.2,
            'mcnemar_vs_best': {'p': p}}
  ensembles = {'won': ensemble(0.1, 0.15, 0.01), 'noise': ensemble(0.1, 0.11, 0.5),
               'lost': ensemble(0.12, 0.11, 0.5)}
  without = [{'eval': ([1000, 2000, 3000], [0.80, 0.84, 0.86])}] * 2
  with_bn = [{'eval': ([1000, 2000, 3000], [0.84, 0.84, 0.87])}] * 2
  made = claims.from_reference(ensembles, {'MLP without BN': without, 'MLP with BN': with_bn},
                               thresholds=(0.84, 0.86))
  verdicts = [c.verdict for c in made]
  assert verdicts[:3] == ['held (p < 0.05)', 'not shown (gain +1.00%, p=0.5)', 'not held']
  assert verdicts[3] == 'held at 84% only'        # 86%: both at step 3000, a tie
  assert verdicts[4] == 'held (2 of 2 seeds)' and verdicts[5] == claims.NOT_TESTED


def test_the_claims_table_is_markdown_with_one_row_per_claim():
  rows = [claims.Claim('a', 'b', 'c', 'held'), claims.Claim('d', 'e', 'f', tb.NOT_RUN)]
  text = claims.markdown(rows).splitlines()
  assert text[0] == '| claim | from | evidence | verdict |'
  assert text[2] == '| a | b | c | **held** |'
  assert len(text) == 4
