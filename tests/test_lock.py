"""The workdir lock: a run is never stranded by the lock of a run that is gone, and never
shares its workdir with a live run of another job.

A lock "from another node" is a file written as that node's run would write it.
"""

import datetime
import json
import os
import subprocess
import sys
import tempfile
import threading

import pytest

from bn_repro import files, workdir as workdir_module
from bn_repro.errors import UserError
from bn_repro.loop.train import train_and_evaluate
from bn_repro.workdir import LockLost, Workdir

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUCKET = 'bn-repro-lock'
LAUNCHER_VARIABLES = ('SLURM_JOB_ID', 'SLURM_ARRAY_JOB_ID', 'SLURM_ARRAY_TASK_ID',
                      'SLURM_RESTART_COUNT', 'BN_REPRO_RUN_ID', 'BN_REPRO_LOCK_STALE_MINUTES')


@pytest.fixture(autouse=True)
def no_launcher(monkeypatch):
  """Each test states the launcher it plays (Slurm, a TPU run, none)."""
  for name in LAUNCHER_VARIABLES:
    monkeypatch.delenv(name, raising=False)


def _ago(minutes: float) -> str:
  moment = datetime.datetime.now().astimezone() - datetime.timedelta(minutes=minutes)
  return moment.isoformat(timespec='seconds')


def _other_node(path: str, *, heartbeat_minutes_ago: float = 0.0, **fields) -> dict:
  """Writes at `path` the lock of a run on another node; returns it."""
  record = {'pid': 4242, 'host': 'node-17', 'process_start': 123, 'since': _ago(600),
            'heartbeat': _ago(heartbeat_minutes_ago), 'token': 'theirs', **fields}
  if path.startswith('gs://'):
    assert files.create_exclusive(path, json.dumps(record)) is not None
  else:
    files.write_text(path, json.dumps(record))
  return record


def _lock_of(workdir: Workdir) -> dict:
  return json.loads(files.read_text(workdir.file('.lock')))


def _takeovers(caplog) -> list[str]:
  return [r.getMessage() for r in caplog.records if 'taking it over' in r.getMessage()]


@pytest.fixture
def run_dir(tmp_path):
  workdir = Workdir(str(tmp_path / 'run'))
  workdir.create()
  return workdir


def test_the_same_slurm_job_requeued_onto_another_node_takes_the_lock_over(
    run_dir, monkeypatch, caplog):
  lock = run_dir.file('.lock')
  monkeypatch.setenv('SLURM_JOB_ID', '777')
  monkeypatch.setenv('SLURM_RESTART_COUNT', '1')
  _other_node(lock, job='Slurm job 777', restart=0)         # a fresh heartbeat: killed just now
  with run_dir.lock():
    mine = _lock_of(run_dir)
    assert (mine['pid'], mine['job'], mine['restart']) == (os.getpid(), 'Slurm job 777', 1)
  (message,) = _takeovers(caplog)
  assert 'node-17' in message and 'requeued it (restart 0 -> 1)' in message
  assert not os.path.exists(lock)

  # The same job not requeued since: another step of it, maybe alive on node-17.
  _other_node(lock, job='Slurm job 777', restart=1)
  with pytest.raises(UserError, match='in use by process 4242 on node-17 .Slurm job 777.'):
    with run_dir.lock():
      pass
  # Array tasks are jobs of their own: task 2 never takes task 1's lock.
  monkeypatch.setenv('SLURM_JOB_ID', '779')
  monkeypatch.setenv('SLURM_ARRAY_JOB_ID', '777')
  monkeypatch.setenv('SLURM_ARRAY_TASK_ID', '2')
  monkeypatch.setenv('SLURM_RESTART_COUNT', '3')
  _other_node(lock, job='Slurm job 777_1', restart=0)
  with pytest.raises(UserError, match=r'\(Slurm job 777_1\)'):
    with run_dir.lock():
      pass
  _other_node(lock, job='Slurm job 777_2', restart=2)
  with run_dir.lock():
    assert _lock_of(run_dir)['job'] == 'Slurm job 777_2'


def test_a_live_run_of_another_job_is_refused_in_one_line(run_dir, monkeypatch):
  lock = run_dir.file('.lock')
  monkeypatch.setenv('SLURM_JOB_ID', '778')
  holder = _other_node(lock, heartbeat_minutes_ago=2, job='Slurm job 777', restart=5)
  with pytest.raises(UserError) as refused:
    with run_dir.lock():
      pass
  message = str(refused.value)
  assert '\n' not in message
  for part in (run_dir.path, 'process 4242 on node-17', '(Slurm job 777)',
               f'since {holder["since"]}', f'last heartbeat {holder["heartbeat"]} (2 min ago)',
               'wait for it to finish or use another --workdir', f'delete {lock}',
               'once its heartbeat is 30 min old'):
    assert part in message, (part, message)
  assert _lock_of(run_dir) == holder                          # untouched
  monkeypatch.delenv('SLURM_JOB_ID')                          # nor outside any job
  with pytest.raises(UserError, match=r'\(Slurm job 777\) since'):
    with run_dir.lock():
      pass


def test_a_lock_whose_heartbeat_is_stale_is_taken_over(run_dir, monkeypatch, caplog):
  lock = run_dir.file('.lock')
  _other_node(lock, heartbeat_minutes_ago=31, job='Slurm job 1')
  with run_dir.lock():
    assert _lock_of(run_dir)['pid'] == os.getpid()
  (message,) = _takeovers(caplog)
  assert 'its last heartbeat is 31 min old (more than 30 min)' in message
  monkeypatch.setenv('BN_REPRO_LOCK_STALE_MINUTES', '45')    # a longer limit: still alive
  _other_node(lock, heartbeat_minutes_ago=31)
  with pytest.raises(UserError, match='once its heartbeat is 45 min old'):
    with run_dir.lock():
      pass
  monkeypatch.setenv('BN_REPRO_LOCK_STALE_MINUTES', 'soon')
  with pytest.raises(UserError, match="BN_REPRO_LOCK_STALE_MINUTES='soon' must be a number"):
    with run_dir.lock():
      pass
  # A lock without a heartbeat (an older bn_repro's) on another host is never stale.
  monkeypatch.delenv('BN_REPRO_LOCK_STALE_MINUTES')
  files.write_text(lock, json.dumps({'pid': 4242, 'host': 'node-17', 'since': 'then'}))
  with pytest.raises(UserError, match='last heartbeat none:'):
    with run_dir.lock():
      pass


def test_the_same_tpu_run_on_a_recreated_vm_takes_the_lock_over(run_dir, monkeypatch, caplog):
  lock = run_dir.file('.lock')
  monkeypatch.setenv('BN_REPRO_TPU_POD', '1')
  monkeypatch.setenv('BN_REPRO_RUN_ID', 'tpu-vm us-central2-b/my-tpu gs://b/run')
  _other_node(lock, host='t1v-n-0ld-w-0', job='run tpu-vm us-central2-b/my-tpu gs://b/run')
  with run_dir.lock():
    assert _lock_of(run_dir)['job'] == 'run tpu-vm us-central2-b/my-tpu gs://b/run'
  (message,) = _takeovers(caplog)
  assert 'left on t1v-n-0ld-w-0 by this same run tpu-vm' in message
  _other_node(lock, host='t1v-n-0ld-w-0', job='run tpu-vm us-central2-b/other-tpu gs://b/run')
  with pytest.raises(UserError, match='in use by process 4242 on t1v-n-0ld-w-0'):
    with run_dir.lock():
      pass


def test_a_dead_process_on_this_host_is_taken_over_and_a_live_one_refused(run_dir, caplog):
  lock = run_dir.file('.lock')
  dead = subprocess.Popen([sys.executable, '-c', 'pass'])
  dead.wait()
  _other_node(lock, host=os.uname().nodename, pid=dead.pid, process_start=None,
              job='Slurm job 1')
  with run_dir.lock():
    assert _lock_of(run_dir)['pid'] == os.getpid()
  assert f'its process {dead.pid} on this host is gone' in _takeovers(caplog)[0]
  _other_node(lock, host=os.uname().nodename, pid=os.getpid(),
              process_start=workdir_module.process_start_time(os.getpid()))
  with pytest.raises(UserError, match=f'in use by process {os.getpid()} '):
    with run_dir.lock():
      pass


def test_the_heartbeat_is_rewritten_and_a_run_whose_lock_was_taken_over_stops(
    run_dir, monkeypatch):
  monkeypatch.setattr(workdir_module, 'HEARTBEAT_EVERY_SECONDS', 0.0)
  lock = run_dir.file('.lock')
  run_dir.heartbeat()                                         # no lock held: nothing
  assert not os.path.exists(lock)
  with run_dir.lock():
    first = _lock_of(run_dir)
    files.write_text(lock, json.dumps(dict(first, heartbeat=_ago(20))))   # as if long ago...
    with pytest.raises(LockLost):                             # ...but written by someone else
      run_dir.heartbeat()
    files.write_text(lock, json.dumps(first))
    run_dir.heartbeat()
    beat = _lock_of(run_dir)
    assert beat == dict(first, heartbeat=beat['heartbeat'])
    assert workdir_module._heartbeat_age(beat) < 5              # noqa: SLF001
    # Another run takes the lock over (its heartbeat looked stale): this one stops.
    theirs = _other_node(lock, job='Slurm job 5')
    with pytest.raises(LockLost) as lost:
      run_dir.heartbeat()
    assert '\n' not in str(lost.value)
    assert 'another run took over the lock (process 4242 on node-17 (Slurm job 5)' in \
        str(lost.value) and 'this run stops' in str(lost.value)
  assert _lock_of(run_dir) == theirs                          # leaving did not remove theirs


def test_training_rewrites_the_heartbeat_and_stops_when_its_lock_is_taken_over(
    tiny_config, tmp_path, monkeypatch):
  monkeypatch.setattr(workdir_module, 'HEARTBEAT_EVERY_SECONDS', 0.0)
  run_dir = str(tmp_path / 'run')
  lock = os.path.join(run_dir, '.lock')
  beats, original = [], files.rewrite_if_unchanged

  def recording(path, text, version):
    beats.append(json.loads(text)['heartbeat'])
    if len(beats) == 3:                   # at step 2, another run takes the lock over
      _other_node(lock, job='Slurm job 5')
    return original(path, text, version)

  monkeypatch.setattr(files, 'rewrite_if_unchanged', recording)
  tiny_config.train_for = '6 steps'
  with pytest.raises(LockLost, match='another run took over the lock'):
    train_and_evaluate(tiny_config, run_dir)
  assert len(beats) == 3                  # at the start, after steps 1 and 2
  assert _lock_of(Workdir(run_dir))['token'] == 'theirs'
  assert not os.path.exists(os.path.join(run_dir, 'results.json'))


def test_train_py_of_a_requeued_slurm_job_takes_over_its_lock_from_another_node(
    fmnist_data_dir, tmp_path):
  """scripts/train.py, as the requeued job runs it on a new node, in a workdir whose lock
  the job's killed first run left on node-17 (a fresh heartbeat: it died a moment ago)."""
  run_dir = Workdir(str(tmp_path / 'run'))
  run_dir.create()
  _other_node(run_dir.file('.lock'), job='Slurm job 9001', restart=0)
  env = {k: v for k, v in os.environ.items() if k not in LAUNCHER_VARIABLES}
  env.update(SLURM_JOB_ID='9001', SLURM_RESTART_COUNT='1')
  out = subprocess.run([sys.executable, 'scripts/train.py', '--config', 'configs/tiny.py',
                        '--workdir', run_dir.path, f'--config.data.data_dir={fmnist_data_dir}',
                        '--config.train_for=2 steps'], cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  assert 'before Slurm requeued it (restart 0 -> 1): taking it over' in out.stderr
  assert run_dir.read_results()['step'] == 2
  assert not os.path.exists(run_dir.file('.lock'))            # released at the end
  # Another job meanwhile is refused with the one line, exit 2.
  _other_node(run_dir.file('.lock'), job='Slurm job 9001', restart=1)
  env.update(SLURM_JOB_ID='9002')
  refused = subprocess.run([sys.executable, 'scripts/train.py', '--config', 'configs/tiny.py',
                            '--workdir', run_dir.path, f'--config.data.data_dir={fmnist_data_dir}',
                            '--config.train_for=4 steps'], cwd=REPO, env=env,
                           capture_output=True, text=True, timeout=300)
  assert refused.returncode == 2
  assert refused.stderr.strip().splitlines()[-1].startswith(
      f'error: {run_dir.path} is in use by process 4242 on node-17 (Slurm job 9001) since')


def test_the_tpu_script_gives_every_worker_one_run_id_from_the_tpu_and_the_workdir(tmp_path):
  """The training command of scripts/tpu_vm_train.sh, run as a worker's shell runs it: the
  run id (which a re-created VM gets again) arrives whole, even from a hostile workdir."""
  fakes = tmp_path / 'bin'
  fakes.mkdir()
  log = tmp_path / 'gcloud_calls'
  (fakes / 'gcloud').write_text(
      f'#!/bin/bash\n{sys.executable} -c "import json, sys; print(json.dumps(sys.argv[1:]))" '
      f'"$@" >> {log}\n')
  (fakes / 'gcloud').chmod(0o755)
  hostile = 'gs://b/run; touch pwned;'
  env = dict(os.environ, PATH=f'{fakes}:{os.environ["PATH"]}', BN_REPRO_ALLOW_DIRTY='1')
  out = subprocess.run(['bash', 'scripts/tpu_vm_train.sh', 'my-tpu', 'us-central2-b',
                        'configs/bn_x30.py', hostile], cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=120)
  assert out.returncode == 0, out.stderr
  call = [json.loads(line) for line in log.read_text().splitlines()][-1]
  train = call[call.index('--command') + 1]
  commit = train.split('~/')[1].split()[0]
  bin_dir = tmp_path / 'home' / commit / '.venv' / 'bin'
  bin_dir.mkdir(parents=True)
  (tmp_path / 'home' / commit / 'logs').mkdir()
  received = tmp_path / 'run_id'
  (bin_dir / 'python').write_text(
      f'#!/bin/bash\nprintf "%s|%s" "$BN_REPRO_TPU_POD" "$BN_REPRO_RUN_ID" > {received}.part\n'
      f'mv {received}.part {received}\n')
  (bin_dir / 'python').chmod(0o755)
  subprocess.run(['bash', '-c', train], cwd=str(tmp_path),
                 env=dict(env, HOME=str(tmp_path / 'home')), check=True, timeout=30)
  for _ in range(200):
    if received.exists():
      break
    threading.Event().wait(0.1)
  assert received.read_text() == f'1|tpu-vm us-central2-b/my-tpu {hostile}'
  assert not any(p.name == 'pwned' for p in tmp_path.rglob('*'))


# On Cloud Storage (the emulator of tests/gcs_emulator.py).

@pytest.fixture(scope='module')
def gcs_environment():
  from tests.gcs_emulator import client_environment
  server = subprocess.Popen([sys.executable, os.path.join(REPO, 'tests', 'gcs_emulator.py'),
                             BUCKET], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
  info = json.loads(server.stdout.readline())
  yield client_environment(info['port'], info['proxy_port'], info['ca'],
                           tempfile.mkdtemp(prefix='cloudsdk_'))
  server.stdin.close()
  server.wait(timeout=30)


@pytest.fixture
def gcs(gcs_environment, monkeypatch):
  for name, value in gcs_environment.items():
    monkeypatch.setenv(name, value)
  monkeypatch.setattr(files, '_gcs_client', None)     # a client of this emulator


def test_the_emulator_honours_generation_preconditions(gcs):
  """What the lock relies on, as Cloud Storage does it: the tests below mean something."""
  path = f'gs://{BUCKET}/emulator/object'
  first = files.create_exclusive(path, 'one')
  assert first is not None and files.create_exclusive(path, 'two') is None
  assert files.read_versioned(path) == ('one', first)
  second = files.replace_if_unchanged(path, 'three', first)
  assert second not in (None, first)
  assert files.replace_if_unchanged(path, 'four', first) is None      # a stale version
  assert not files.remove_if_unchanged(path, first)
  assert files.read_versioned(path) == ('three', second)
  assert files.remove_if_unchanged(path, second)
  with pytest.raises(FileNotFoundError):
    files.read_versioned(path)


def _race(path: str, runs: int) -> list[str]:
  """`runs` threads take the lock of `path` at the same moment; what each got."""
  start, done, results = threading.Barrier(runs), threading.Barrier(runs), []

  def run():
    start.wait()
    try:
      with Workdir(path).lock():
        results.append('won')
        done.wait()                       # held until every other one has tried
    except UserError:
      results.append('refused')
      done.wait()

  threads = [threading.Thread(target=run) for _ in range(runs)]
  for thread in threads:
    thread.start()
  for thread in threads:
    thread.join(timeout=60)
  return results


def _root(where: str, request, tmp_path) -> str:
  if where == 'local':
    return str(tmp_path)
  request.getfixturevalue('gcs')
  return f'gs://{BUCKET}/{request.node.name}'


@pytest.mark.parametrize('where', ['local', 'gcs'])
def test_of_runs_starting_at_once_exactly_one_takes_the_lock(where, request, tmp_path):
  for attempt in range(3):
    path = files.join(_root(where, request, tmp_path), str(attempt))
    if where == 'local':
      os.makedirs(path)
    assert sorted(_race(path, 6)) == ['refused'] * 5 + ['won']
    with pytest.raises(FileNotFoundError):                    # released by the winner
      files.read_versioned(files.join(path, '.lock'))


@pytest.mark.parametrize('where', ['local', 'gcs'])
def test_of_runs_taking_over_one_stale_lock_exactly_one_wins(where, request, tmp_path, caplog):
  for attempt in range(3):
    path = files.join(_root(where, request, tmp_path), str(attempt))
    if where == 'local':
      os.makedirs(path)
    _other_node(files.join(path, '.lock'), heartbeat_minutes_ago=60)
    assert sorted(_race(path, 6)) == ['refused'] * 5 + ['won']
  assert len(_takeovers(caplog)) == 3
  if where == 'local':                      # released, no claim or temporary file left
    assert not [n for n in os.listdir(path) if n.startswith('.lock')]
