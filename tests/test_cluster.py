"""Cluster start-up as the real thing does it, under simulated environments: Slurm's
variables and fake `srun` / `scontrol` / `nvidia-smi` / `gcloud` commands on PATH."""

import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time

import pytest

from bn_repro.parallel import distributed

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _fake_command(directory, name, body):
  path = os.path.join(directory, name)
  with open(path, 'w') as f:
    f.write('#!/bin/bash\n' + body + '\n')
  os.chmod(path, 0o755)
  return path


@pytest.mark.parametrize('layout,env,expected', [
    ('one task per node, 8 GPUs',
     dict(SLURM_NTASKS_PER_NODE='1', SLURM_LOCALID='0', CUDA_VISIBLE_DEVICES='0,1,2,3,4,5,6,7',
          SLURM_GPUS_ON_NODE='8'), [0, 1, 2, 3, 4, 5, 6, 7]),
    ('one task per GPU (--gpus-per-task=1)',
     dict(SLURM_NTASKS_PER_NODE='8', SLURM_LOCALID='5', CUDA_VISIBLE_DEVICES='5',
          SLURM_GPUS_ON_NODE='8'), [0]),
    ('two tasks sharing the node\'s 8 GPUs',
     dict(SLURM_TASKS_PER_NODE='2(x3)', SLURM_LOCALID='1', CUDA_VISIBLE_DEVICES='0,1,2,3,4,5,6,7',
          SLURM_GPUS_ON_NODE='8'), [4, 5, 6, 7]),
    ('no GPU', dict(SLURM_NTASKS_PER_NODE='1', SLURM_LOCALID='0', CUDA_VISIBLE_DEVICES=''), None),
])
def test_each_slurm_task_gets_its_gpus(layout, env, expected, monkeypatch):
  for name in ('SLURM_NTASKS_PER_NODE', 'SLURM_TASKS_PER_NODE', 'SLURM_GPUS_ON_NODE',
               'SLURM_STEP_GPUS'):
    monkeypatch.delenv(name, raising=False)
  for name, value in env.items():
    monkeypatch.setenv(name, value)
  assert distributed.slurm_local_device_ids() == expected, layout


STARTUP = r'''
import json, sys
from absl import flags, logging
from bn_repro.parallel import distributed
flags.FLAGS(['startup'])
logging.use_absl_handler()
logging.set_verbosity('info')
distributed.initialize()
import jax
print(json.dumps({'cuda_visible_devices': jax.config.read('jax_cuda_visible_devices'),
                  'process': jax.process_index(), 'processes': jax.process_count(),
                  'local_devices': jax.local_device_count(), 'devices': jax.device_count()}))
'''


def free_coordinator_port():
  """A port free here among those where JAX puts a Slurm or Open MPI job's coordinator,
  61440 + (a job number) % 4096: above Linux's ephemeral range, so bind to port 0 never
  gives one; tried at random."""
  for port in random.sample(range(61440, 65536), 200):
    with socket.socket() as s:
      try:
        s.bind(('127.0.0.1', port))
      except OSError:
        continue
    return port
  raise RuntimeError('no free port in 61440-65535')


def _free_port_for_a_job_id():
  """A Slurm job id whose coordinator port (JAX: 61440 + id % 4096) is free here."""
  return free_coordinator_port() - 61440 + 4096 * 10


def test_two_slurm_nodes_of_eight_gpus_start_with_every_gpu():
  """2 tasks (one per node), as `sbatch --nodes=2 scripts/slurm_train.sbatch` starts them:
  JAX joins them from Slurm's variables alone; each task hands JAX all 8 GPUs of its node
  (JAX on its own would make it [SLURM_LOCALID] = [0]). CPU devices stand in for the GPUs."""
  job = _free_port_for_a_job_id()
  procs = []
  for task in range(2):
    env = dict(os.environ, SLURM_JOB_ID=str(job), SLURM_STEP_NODELIST='127.0.0.1',
               SLURM_NODELIST='127.0.0.1', SLURM_NTASKS='2', SLURM_PROCID=str(task),
               SLURM_LOCALID='0', SLURM_NODEID=str(task), SLURM_NTASKS_PER_NODE='1',
               SLURM_GPUS_ON_NODE='8', CUDA_VISIBLE_DEVICES='0,1,2,3,4,5,6,7',
               JAX_PLATFORMS='cpu', XLA_FLAGS='--xla_force_host_platform_device_count=4')
    procs.append(subprocess.Popen([sys.executable, '-c', STARTUP], cwd=REPO, env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
  results = []
  for proc in procs:
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-2000:]
    assert 'jax.distributed.initialize(local_device_ids=[0, 1, 2, 3, 4, 5, 6, 7])' in err
    results.append(json.loads(out.strip().splitlines()[-1]))
  assert sorted(r['process'] for r in results) == [0, 1]
  for r in results:
    assert r['cuda_visible_devices'] == '0,1,2,3,4,5,6,7'
    assert (r['processes'], r['local_devices'], r['devices']) == (2, 4, 8)


def _fake_gpu_node(tmp_path, probe):
  """The environment of a GPU node with CPU JAX: the GPU seen by `probe`, a fake
  nvidia-smi or a fake /dev/nvidia0; JAX_PLATFORMS unset (the tests set it to cpu)."""
  fakes, dev = tmp_path / 'bin', tmp_path / 'dev'
  fakes.mkdir()
  dev.mkdir()
  if probe == 'nvidia-smi':
    _fake_command(str(fakes), 'nvidia-smi', 'echo "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-0)"')
  else:
    (dev / 'nvidia0').touch()
  env = dict(os.environ, PATH=f'{fakes}:{os.environ["PATH"]}', BN_REPRO_DEVICE_ROOT=str(dev))
  env.pop('JAX_PLATFORMS', None)
  return env


@pytest.mark.parametrize('files,accelerator', [
    ((), None), (('nvidia0', 'nvidiactl'), 'gpu'), (('accel0',), 'tpu'), (('vfio/0',), 'tpu'),
    (('nvidiactl',), None)])
def test_the_accelerator_probes_look_under_the_device_root(files, accelerator, tmp_path,
                                                           monkeypatch):
  for name in files:
    (tmp_path / name).parent.mkdir(exist_ok=True)
    (tmp_path / name).touch()
  monkeypatch.setenv('BN_REPRO_DEVICE_ROOT', str(tmp_path))
  monkeypatch.setenv('PATH', str(tmp_path))   # no nvidia-smi
  assert distributed.accelerator_on_this_machine() == accelerator


GPU_REFUSAL = ('error: this machine has a GPU but JAX runs on the CPU: install JAX for it with '
               '`make setup ACCEL=cuda12 (or cuda13, matching the driver)`, or pass --allow_cpu')


@pytest.mark.parametrize('probe', ['nvidia-smi', '/dev/nvidia0'])
def test_the_cpu_on_a_gpu_machine_is_an_error_unless_allowed(probe, tmp_path):
  """On a GPU node with CPU JAX a script stops with one line, unless the CPU is asked for:
  JAX_PLATFORMS=cpu (as the tests and scripts/launch_local.py set it) or --allow_cpu."""
  env = _fake_gpu_node(tmp_path, probe)
  command = [sys.executable, 'scripts/model_summary.py', '--config', 'configs/tiny.py']
  refused = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True,
                           timeout=300)
  assert refused.returncode == 2
  assert refused.stderr.strip().splitlines()[-1] == GPU_REFUSAL
  if probe != 'nvidia-smi':
    return
  asked = subprocess.run(command, cwd=REPO, env=dict(env, JAX_PLATFORMS='cpu'),
                         capture_output=True, text=True, timeout=300)
  assert asked.returncode == 0, asked.stderr[-2000:]
  assert 'JAX_PLATFORMS=cpu: the GPU of this machine is not used, as asked' in asked.stderr
  assert 'total params:' in asked.stdout
  allowed = subprocess.run(command + ['--allow_cpu'], cwd=REPO, env=env, capture_output=True,
                           text=True, timeout=300)
  assert allowed.returncode == 0, allowed.stderr[-2000:]
  assert re.search(r'JAX \S+ on cpu: \d+ cpu device', allowed.stderr)
  assert 'Running on the CPU although this machine has a GPU (--allow_cpu)' in allowed.stderr
  assert 'total params:' in allowed.stdout


def test_the_demo_runs_on_the_cpu_of_a_gpu_node_and_says_so(fmnist_data_dir, tmp_path):
  """`make demo` on a GPU node with CPU JAX: the smoke job runs (a few steps here), on the
  CPU, and says so, naming the install command for the GPU."""
  env = _fake_gpu_node(tmp_path, 'nvidia-smi')
  out = subprocess.run(
      [sys.executable, 'scripts/demo.py', '--workdir', str(tmp_path / 'demo'),
       f'--config.data.data_dir={fmnist_data_dir}', '--config.train_for=2 steps',
       '--config.data.in_memory=False', '--config.data.eval_split=test[:64]',
       '--config.eval_batch_size=64', '--config.global_batch_size=16',
       '--config.model.width=0.0625', '--population_batches=2'],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  assert ('demo: running on CPU (8 x cpu), although this machine has a GPU: JAX for it is not '
          'installed (`make setup ACCEL=cuda12 (or cuda13, matching the driver)`)') in out.stdout
  assert re.search(r'RESULT demo: .* on 64 test images, .* after 2 steps, [\d.]+ min on CPU',
                   out.stdout), out.stdout


def test_a_preempted_slurm_job_saves_and_requeues_itself(tiny_config, tmp_path):
  """scripts/slurm_train.sbatch under a fake Slurm: SIGTERM to the batch shell (what
  --signal=B:TERM@120 does) reaches the training, which checkpoints and calls
  `scontrol requeue <job>`."""
  fakes = str(tmp_path / 'bin')
  os.makedirs(fakes)
  calls = str(tmp_path / 'scontrol_calls')
  _fake_command(fakes, 'srun', 'while [[ $1 == --* ]]; do shift; done; exec "$@"')
  _fake_command(fakes, 'scontrol', f'echo "$@" >> {calls}')
  workdir = str(tmp_path / 'run')
  env = dict(os.environ, PATH=f'{fakes}:{os.environ["PATH"]}', SLURM_JOB_ID='4242',
             SLURM_SUBMIT_DIR=REPO)
  job = subprocess.Popen(
      ['bash', 'scripts/slurm_train.sbatch', 'configs/tiny.py', workdir,
       f'--config.data.data_dir={tiny_config.data.data_dir}', '--config.train_for=100000 steps',
       '--config.hooks.eval.every=never', '--config.hooks.checkpoint.every=100000 steps'],
      cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  metrics = os.path.join(workdir, 'metrics.jsonl')
  deadline = time.time() + 240
  while time.time() < deadline and not (
      os.path.exists(metrics) and 'train_loss' in open(metrics).read()):
    assert job.poll() is None, job.communicate()[0][-3000:]
    time.sleep(0.5)
  job.send_signal(signal.SIGTERM)
  output = job.communicate(timeout=120)[0]
  assert job.returncode == 0, output[-3000:]
  assert 'requeued Slurm job 4242' in output
  with open(calls) as f:
    assert f.read().split() == ['requeue', '4242']
  assert os.listdir(os.path.join(workdir, 'checkpoints'))


def test_the_tpu_script_quotes_every_argument_and_starts_every_worker(tmp_path):
  """With a fake gcloud recording its arguments: the code goes to all workers, and the
  training command, run by a shell as the workers run it, gets the arguments exactly,
  including a workdir built to break an unquoted command."""
  fakes = str(tmp_path / 'bin')
  os.makedirs(fakes)
  log = str(tmp_path / 'gcloud_calls')
  _fake_command(fakes, 'gcloud',
                f'{sys.executable} -c "import json, sys; print(json.dumps(sys.argv[1:]))" '
                f'"$@" >> {log}')
  hostile = 'gs://b/run; touch pwned;'
  env = dict(os.environ, PATH=f'{fakes}:{os.environ["PATH"]}', BN_REPRO_ALLOW_DIRTY='1')
  args = ['my-tpu', 'us-central2-b', 'configs/bn_x30.py', hostile,
          '--config.data.data_dir=gs://b/tensorflow datasets', "--config.name=it's mine"]
  out = subprocess.run(['bash', 'scripts/tpu_vm_train.sh', *args], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=120)
  assert out.returncode == 0, out.stderr
  calls = [json.loads(line) for line in open(log)]
  assert [c[:4] for c in calls] == [['compute', 'tpus', 'tpu-vm', 'scp']] + [
      ['compute', 'tpus', 'tpu-vm', 'ssh']] * 2
  assert all('--worker=all' in c for c in calls)
  setup, train = (c[c.index('--command') + 1] for c in calls[1:])
  assert 'make setup ACCEL=tpu' in setup and 'BN_REPRO_TPU_POD=1' in train
  assert 'nohup setsid' in train and train.rstrip().endswith('&')

  # Run the training command as a worker's shell would, with a python that records argv.
  home = tmp_path / 'home'
  commit = re.search(r'~/(bn_repro-[0-9a-f]+)', train).group(1)
  tree = home / commit
  (tree / '.venv' / 'bin').mkdir(parents=True)
  (tree / 'logs').mkdir()
  received = tmp_path / 'argv.json'
  _fake_command(str(tree / '.venv' / 'bin'), 'python',
                f'{sys.executable} -c "import json, sys; print(json.dumps(sys.argv[1:]))" '
                f'"$@" > {received}')
  subprocess.run(['bash', '-c', train], cwd=str(tmp_path), env=dict(env, HOME=str(home)),
                 check=True, timeout=30)
  deadline = time.time() + 20
  while not (received.exists() and received.read_text().strip()) and time.time() < deadline:
    time.sleep(0.1)
  assert json.loads(received.read_text()) == [
      'scripts/train.py', '--config', 'configs/bn_x30.py', '--workdir', hostile, *args[4:]]
  assert not any(p.name == 'pwned' for p in tmp_path.rglob('*'))

  dry = subprocess.run(['bash', 'scripts/tpu_vm_train.sh', '--dry_run', *args], cwd=REPO,
                       env=dict(env, PATH=f'{fakes}:{os.environ["PATH"]}'), capture_output=True,
                       text=True, timeout=120)
  assert dry.returncode == 0, dry.stderr
  assert len([line for line in dry.stdout.splitlines() if line.startswith('gcloud ')]) == 3
  assert len(open(log).read().splitlines()) == 3          # nothing more was run


def test_a_second_run_reuses_the_compilation_cache(tmp_path):
  """The first run fills the persistent cache; the second compiles nothing new."""
  cache = tmp_path / 'cache'
  env = dict(os.environ, XLA_FLAGS='')
  env.pop('JAX_COMPILATION_CACHE_DIR', None)
  command = [sys.executable, 'scripts/benchmark.py', '--config', 'configs/tiny.py', '--parts',
             '1', '--steps', '1', '--repeats', '1', f'--compilation_cache_dir={cache}']
  runs = []
  for _ in range(2):
    out = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    runs.append((sorted(p.name for p in cache.iterdir()), out.stderr))
  assert runs[0][0] and runs[1][0] == runs[0][0]
  assert all(re.search(r'compiled make_train_step.step and ran it once in [\d.]+ s', err)
             for _, err in runs)


def _gpu_benchmark(out_dir, **overrides):
  # The GPU image has no TensorFlow: its Python here is one that cannot import it.
  python = out_dir / 'bin' / 'python3'
  python.parent.mkdir()
  python.write_text(f'#!/bin/sh\nexec {sys.executable} {REPO}/tests/without_tensorflow.py "$@"\n')
  python.chmod(0o755)
  env = dict(os.environ, XLA_FLAGS='', CONFIG='configs/small_scale.py:mlp', STEPS='2',
             REPEATS='2', LOOP_STEPS='12', PROFILE_STEPS='2', PYTHON=str(python),
             PYTHONPATH=REPO)
  env.update(overrides)
  return subprocess.run(['bash', 'scripts/gpu_benchmark.sh', str(out_dir)], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=900)


def test_the_gpu_benchmark_script_runs_every_variant_and_writes_its_results(tmp_path):
  """scripts/gpu_benchmark.sh end to end on the CPU, with the MLP standing in for
  BN-Inception: every variant's rate, the loop against the bare step, the profile's table,
  FLOPs (counted when XLA gives none) and a summary."""
  out = _gpu_benchmark(tmp_path)
  assert out.returncode == 0, out.stderr[-2000:]
  summary = (tmp_path / 'summary.txt').read_text()
  for name in ('bf16_b128', 'bf16_b32', 'bf16_b256', 'f32_b128', 'bf16_b128_augmentation_on_host',
               'bf16_b128_no_bn'):
    result = json.loads((tmp_path / f'{name}.json').read_text())
    rates = result['1_bare_step']['images_per_s_by_repeat']
    assert len(rates) == 2 and min(rates) > 0, name
    assert f'{name}: 1 bare train step:' in summary
  first = json.loads((tmp_path / 'bf16_b128.json').read_text())
  flops = first['6_flops']
  assert flops['forward_gflops_per_image'] > 0
  assert flops['counted_forward_gflops_per_image'] == pytest.approx(
      2 * (784 * 100 + 100 * 100 * 2 + 100 * 10) / 1e9)   # the MLP's multiply-adds, x2
  loop = first['2_full_loop']
  assert loop['source'] == 'synthetic' and loop['ratio_to_bare_step'] > 0
  assert re.search(r'2 full training loop \(synthetic input.*x the bare step', summary)
  table = (tmp_path / 'profile' / 'profile_summary.txt').read_text()
  assert first['7_profile']['categories']['convolutions']['ms_per_step'] > 0   # the MLP's dots
  assert 'convolutions' in table and '7 profile of 2 train steps' in summary
  assert 'input pipeline: not measured' in summary   # no TensorFlow
  assert 'failed' not in summary and re.search(r'total: \d+ s', summary)


def test_the_gpu_benchmark_script_fails_loudly_when_a_part_breaks(tmp_path):
  """A part that breaks (here the profile, given no steps to trace) fails the script: it
  says which variant and part, and exits 1, instead of skipping it."""
  out = _gpu_benchmark(tmp_path, PROFILE_STEPS='0', BUDGET_SECONDS='0')
  assert out.returncode == 1
  summary = (tmp_path / 'summary.txt').read_text()
  assert 'bf16_b128 failed: no part 7' in summary and '1 variant(s) failed' in summary
  assert 'no device ops' in (tmp_path / 'bf16_b128.txt').read_text()
