"""Part 8 of the benchmark: the stored copies' size, host cost and fidelity are measured
from real encodes and decodes, and bad copy specs are refused."""

import json
import os
import subprocess
import sys

import pytest

from bn_repro.benchmarks import stored_copies
from configs import bn_x5


def test_copy_specs_are_parsed_and_bad_ones_refused():
  assert stored_copies.parse_copies(['320:90', '256:75']) == [(320, 90), (256, 75)]
  for bad in ('320', '320:0', '320:101', 'side:90', ':90', '0:90'):
    with pytest.raises(ValueError, match='SIDE:QUALITY'):
      stored_copies.parse_copies([bad])


def test_smaller_and_coarser_copies_are_smaller_and_lose_more_of_the_photograph():
  r = stored_copies.compare(bn_x5.get_config().data, [(320, 95), (320, 40), (160, 95)],
                            images=6, batch=8, num_batches=2, repeats=1)
  assert set(r) == {'original', 'side320_q95', 'side320_q40', 'side160_q95'}
  original, fine, coarse, small = (r[k] for k in r)
  assert original['jpeg_kb'] > fine['jpeg_kb'] > coarse['jpeg_kb']
  assert fine['jpeg_kb'] > small['jpeg_kb']
  # The originals only carry their own JPEG noise; every copy adds to it.
  assert original['fidelity_db'] > fine['fidelity_db'] > coarse['fidelity_db'] + 1
  assert fine['fidelity_db'] > small['fidelity_db'] + 1
  # A copy at half the side upscales the small crops: they lose the most.
  assert small['fidelity_db_small_crops'] < small['fidelity_db']
  for v in r.values():
    assert v['cpu_ms_per_image'] > 0 and len(v['cpu_ms_by_repeat']) == 1


def test_the_benchmark_script_runs_part_8_and_refuses_a_bad_copy(repo_root, tmp_path):
  output = tmp_path / 'copies.json'
  base = [sys.executable, 'scripts/benchmark.py', '--config', 'configs/bn_x5.py', '--parts', '8',
          '--steps', '1', '--repeats', '1', '--pipeline_batch', '8']
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')
  run = subprocess.run(base + ['--stored_copies', '256:90', '--output', str(output)],
                       cwd=repo_root, env=env, capture_output=True, text=True, timeout=300)
  assert run.returncode == 0, run.stderr[-3000:]
  assert 'side256_q90: ' in run.stdout
  results = json.loads(output.read_text())
  assert set(results['8_stored_copies']) == {'original', 'side256_q90'}
  assert results['environment']['host_cpu']
  bad = subprocess.run(base + ['--stored_copies', '256'], cwd=repo_root, env=env,
                       capture_output=True, text=True, timeout=300)
  assert bad.returncode != 0 and 'expected SIDE:QUALITY' in bad.stderr

