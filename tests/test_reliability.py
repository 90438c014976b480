"""Nothing silently wrong, nothing lost, every mistake a one-line error.

Training runs in this process where that is enough; user mistakes run the
scripts as a user would, in subprocesses started together.
"""

import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from bn_repro import files
from bn_repro.errors import ConfigError, DataError, UserError
from bn_repro.evaluation import population
from bn_repro.evaluation.evaluators import EvalSpec, evaluate_workdir, saved_evaluation
from bn_repro.evaluation.trained import load_trained
from bn_repro.loop import config_checks
from bn_repro.loop.hooks import TargetsHook
from bn_repro.loop.train import TrainingDiverged, train_and_evaluate
from bn_repro.training import optim
from bn_repro.training.checkpoints import CheckpointDamaged, Checkpoints
from bn_repro.workdir import Workdir, process_start_time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _train(config, workdir, steps, **kwargs):
  config.train_for = f'{steps} steps'
  return train_and_evaluate(config, workdir, **kwargs)


def _state(workdir, step):
  path = Checkpoints(Workdir(workdir).checkpoint_dir, read_only=True).path(step)
  return [np.asarray(x) for item in ('model', 'training')
          for x in jax.tree.leaves(ocp.StandardCheckpointer().restore(os.path.join(path, item)))]


def test_resuming_with_another_config_is_refused_unless_asked_for(tiny_config, tmp_path):
  workdir = str(tmp_path)
  _train(tiny_config, workdir, 2)
  saved = Workdir(workdir).load_config()
  tiny_config.model.activation = 'sigmoid'        # same parameter shapes, another network
  with pytest.raises(ConfigError, match=r"model.activation: 'relu' there, 'sigmoid' now") as e:
    _train(tiny_config, workdir, 4)
  assert '\n' not in str(e.value) and '--allow_config_change' in str(e.value)
  assert Workdir(workdir).load_config() == saved and Workdir(workdir).read_results()['step'] == 2
  tiny_config.hooks.eval.every = '1 steps'         # how a run is watched may change freely
  tiny_config.model.activation = 'relu'
  assert _train(tiny_config, workdir, 3)['step'] == 3
  tiny_config.model.activation = 'sigmoid'
  assert _train(tiny_config, workdir, 4, allow_config_change=True)['step'] == 4
  (history,) = [json.loads(line) for line in open(Workdir(workdir).file('config_history.jsonl'))]
  assert history['config']['model']['activation'] == 'relu'
  assert Workdir(workdir).load_config().model.activation == 'sigmoid'


@pytest.mark.parametrize('field,value,message', [
    ('hooks.checkpoint.keep', 0, 'hooks.checkpoint.keep=0 must be an integer >= 1'),
    ('hooks.checkpoint.every', '0 steps', "hooks.checkpoint.every='0 steps' must be > 0"),
    ('log_every', '0 steps', "log_every='0 steps' must be > 0"),
    ('hooks.eval.every', '-1 epochs', "hooks.eval.every='-1 epochs' is not a duration"),
    ('train_for', '2.5 steps', 'a number of steps must be whole'),
    ('hooks.eval.statistics', 'batch', "hooks.eval.statistics='batch' is not one of"),
])
def test_zero_negative_and_malformed_values_are_one_line_config_errors(field, value, message):
  from configs import tiny
  config = tiny.get_config()
  *parents, leaf = field.split('.')
  node = config
  for parent in parents:
    node = node[parent]
  node[leaf] = value
  with pytest.raises(ConfigError, match=message) as e:
    config_checks.validate(config)
  assert '\n' not in str(e.value)


def test_the_checkpoint_hook_is_found_by_its_kind_and_there_is_exactly_one(tiny_config, tmp_path):
  hooks = tiny_config.hooks
  with tiny_config.unlocked():
    hooks.save = dict(hooks.checkpoint, keep=1)     # the same hook under another name
    del hooks['checkpoint']
  config_checks.validate(tiny_config)
  _train(tiny_config, str(tmp_path), 4)
  assert Checkpoints(Workdir(str(tmp_path)).checkpoint_dir, read_only=True).all_steps() == [4]
  with tiny_config.unlocked():
    hooks.also_save = dict(hooks.save)
  with pytest.raises(ConfigError, match=r'exactly one hook of kind checkpoint, has 2 '
                                        r'\(also_save, save\)$'):
    config_checks.validate(tiny_config)
  with tiny_config.unlocked():
    del hooks['save'], hooks['also_save']
  with pytest.raises(ConfigError, match='exactly one hook of kind checkpoint, has 0$'):
    config_checks.validate(tiny_config)


def test_the_learning_rate_follows_the_global_batch():
  from configs import bn_x5, small_scale
  config = bn_x5.get_config().optimizer
  assert optim.peak_learning_rate(config, 256) == pytest.approx(0.0075 * 8)
  assert optim.peak_learning_rate(config, 1024) == pytest.approx(0.0075 * 32)
  twin = small_scale.get_config('bn_x5').optimizer     # the twins' fixed factor, any batch
  assert optim.peak_learning_rate(twin, 64) == optim.peak_learning_rate(twin, 128)


def _flip_array_bytes(checkpoint_dir):
  """Flips bytes in the middle of the largest array-data file of a checkpoint's model item."""
  data = [os.path.join(d, f) for d, _, names in os.walk(os.path.join(checkpoint_dir, 'model'))
          for f in names if os.path.basename(d) == 'd']   # OCDBT's data files
  target = max(data, key=os.path.getsize)
  with open(target, 'r+b') as f:
    size = os.path.getsize(target)
    f.seek(size // 2)
    chunk = f.read(16)
    f.seek(size // 2)
    f.write(bytes(b ^ 0xFF for b in chunk))


def test_damaged_checkpoint_is_detected_and_training_falls_back_to_an_intact_one(
    tiny_config, tmp_path, caplog):
  straight, damaged = str(tmp_path / 'straight'), str(tmp_path / 'damaged')
  _train(tiny_config, straight, 6)
  _train(tiny_config, damaged, 4)                   # checkpoints at 2 and 4
  checkpoints = Checkpoints(Workdir(damaged).checkpoint_dir, read_only=True)
  _flip_array_bytes(checkpoints.path(4))
  with pytest.raises(CheckpointDamaged, match='checkpoint .*/4 '):
    load_trained(damaged, step=4)                  # evaluation refuses it
  results = _train(tiny_config, damaged, 6)
  assert results['step'] == 6
  assert any('resumed from step 2 instead' in r.getMessage() for r in caplog.records)
  assert os.path.isdir(checkpoints.path(4) + '.damaged')
  for x, y in zip(_state(damaged, 6), _state(straight, 6)):
    np.testing.assert_array_equal(x, y)


def test_divergence_on_a_checkpoint_step_saves_nothing_and_the_run_can_resume(tiny_config,
                                                                             tmp_path):
  """A step that fails is never checkpointed (under its own number or any other), so running
  again meets the same failure at the same step, not a clash of checkpoint numbers."""
  workdir = str(tmp_path)
  tiny_config.hooks.checkpoint.every = '1 steps'    # every step is a checkpoint step
  _train(tiny_config, workdir, 2)
  tiny_config.optimizer.learning_rate = 1e30
  for _ in range(2):
    with pytest.raises(TrainingDiverged, match=r'at step (\d+)') as e:
      _train(tiny_config, workdir, 6, allow_config_change=True)
    failed = int(re.search(r'at step (\d+)', str(e.value)).group(1))
    steps = Checkpoints(Workdir(workdir).checkpoint_dir).all_steps()
    assert failed not in steps and max(steps) == failed - 1, (failed, steps)
    assert f'last checkpoint (step {failed - 1}) is intact' in str(e.value)


def test_population_statistics_are_replaced_only_when_the_new_ones_are_complete(tmp_path):
  workdir = Workdir(str(tmp_path))
  old = {'layer': {'mean': np.zeros(3, np.float32), 'var': np.ones(3, np.float32)}}
  population.save(workdir, 7, old, {'seed': 0})
  with pytest.raises(Exception):
    population.save(workdir, 7, {'layer': {'mean': object()}}, {'seed': 1})   # cannot be saved
  stats, meta = population.load(workdir, 7)
  assert meta == {'seed': 0}
  np.testing.assert_array_equal(stats['layer']['var'], old['layer']['var'])


def test_a_swap_killed_between_its_renames_keeps_the_statistics(tmp_path):
  """Killed at the fault point between `<S>` -> `<S>.replaced` and `<S>.incomplete` -> `<S>`,
  then killed again with only the old copy left: both times `load` finds complete ones."""
  workdir = Workdir(str(tmp_path / 'run'))
  workdir.create()
  code = ('import numpy as np, sys\nfrom bn_repro.evaluation import population\n'
          'from bn_repro.workdir import Workdir\n'
          'stats = {"layer": {"mean": np.full(3, float(sys.argv[2]), np.float32), '
          '"var": np.ones(3, np.float32)}}\n'
          'population.save(Workdir(sys.argv[1]), 24, stats, {"seed": int(sys.argv[2])})\n')
  env = dict(os.environ, BN_REPRO_FAULT='population_swap@24:kill', JAX_PLATFORMS='cpu')
  ok = subprocess.run([sys.executable, '-c', code, workdir.path, '1'], capture_output=True,
                      text=True, timeout=120, env=dict(env, BN_REPRO_FAULT=''))
  assert ok.returncode == 0, ok.stderr[-2000:]
  killed = subprocess.run([sys.executable, '-c', code, workdir.path, '2'], capture_output=True,
                          text=True, timeout=120, env=env)
  assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
  assert not os.path.exists(workdir.population_dir(24))
  stats, meta = population.load(workdir, 24)
  assert meta == {'seed': 2} and stats['layer']['mean'][0] == 2   # the new copy was complete
  shutil.rmtree(workdir.population_staging_dir(24))                 # only the old one left
  stats, meta = population.load(workdir, 24)
  assert meta == {'seed': 1} and stats['layer']['mean'][0] == 1
  population.save(workdir, 24, stats, {'seed': 3})                  # the next save tidies up
  assert population.load(workdir, 24)[1] == {'seed': 3}
  assert sorted(os.listdir(workdir.population_root)) == ['24']


def test_metrics_reach_the_file_at_once_and_a_resumed_run_drops_what_it_redoes(tmp_path):
  workdir = Workdir(str(tmp_path))
  from bn_repro.training.metric_writers import JsonLinesWriter
  writer = JsonLinesWriter(workdir.metrics_file)
  for step in (1, 2, 3):
    writer.write_scalars(step, {'train_loss': float(step)})
  # No flush, no close: as after a kill.
  assert [r['step'] for r in workdir.read_metrics()] == [1, 2, 3]
  with open(workdir.metrics_file, 'a') as f:
    f.write('{"step": 4, "train_lo')                 # a line cut short by the kill
  assert [r['step'] for r in workdir.read_metrics()] == [1, 2, 3]
  workdir.keep_metrics_up_to(2)
  writer.write_scalars(3, {'train_loss': 30.0})
  assert [(r['step'], r['train_loss']) for r in workdir.read_metrics()] == [
      (1, 1.0), (2, 2.0), (3, 30.0)]


def test_damaged_targets_and_saved_probabilities_are_rebuilt(tiny_config, tmp_path, caplog):
  workdir = str(tmp_path)
  tiny_config.hooks.targets.values = (0.01,)        # reached at the first evaluation
  _train(tiny_config, workdir, 2)
  with open(Workdir(workdir).targets_file, 'w') as f:
    f.write('{"reach')                               # cut short
  results = _train(tiny_config, workdir, 4)
  assert results['targets_reached']['0.01']['step'] == 2   # rebuilt from metrics.jsonl
  spec = EvalSpec('ema', 1)
  evaluate_workdir(workdir, spec, save_probs=True)
  _, npz = Workdir(workdir).eval_files(spec.name('test[:256]'), 4)
  with open(npz, 'r+b') as f:
    f.truncate(100)
  assert saved_evaluation(workdir, spec, 'test[:256]') is None
  assert any('is damaged' in r.getMessage() for r in caplog.records)


def test_a_lock_of_a_reused_pid_or_a_half_written_lock_is_taken_over(tiny_config, tmp_path,
                                                                     caplog):
  workdir = Workdir(str(tmp_path))
  workdir.create()
  lock = workdir.file('.lock')
  # The PID is alive (this process) but started at another time: its holder is gone.
  with open(lock, 'w') as f:
    json.dump({'pid': os.getpid(), 'host': os.uname().nodename, 'since': 'then',
               'process_start': 1}, f)
  with workdir.lock():
    holder = json.load(open(lock))
    assert holder['pid'] == os.getpid() and holder['process_start'] > 1
  for text in ('', '{"pid": 12'):                  # empty, or cut short by a crash
    with open(lock, 'w') as f:
      f.write(text)
    with workdir.lock():
      assert json.load(open(lock))['pid'] == os.getpid()
    assert not os.path.exists(lock)
  assert sum('cannot be read' in r.getMessage() and 'taking it over' in r.getMessage()
             for r in caplog.records) == 2
  # A live holder with its real start time is still refused.
  live = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])
  try:
    with open(lock, 'w') as f:
      json.dump({'pid': live.pid, 'host': os.uname().nodename, 'since': 'now',
                 'process_start': process_start_time(live.pid)}, f)
    with pytest.raises(UserError, match=rf'in use by process {live.pid} '):
      with workdir.lock():
        pass
  finally:
    live.kill()
    live.wait()


def test_a_workdir_in_use_is_refused_and_a_stale_lock_is_taken_over(tiny_config, tmp_path):
  workdir = Workdir(str(tmp_path))
  workdir.create()
  lock = workdir.file('.lock')
  with open(lock, 'w') as f:
    json.dump({'pid': os.getpid(), 'host': os.uname().nodename, 'since': 'now'}, f)
  with pytest.raises(UserError, match=rf'in use by process {os.getpid()} .*delete {lock}'):
    _train(tiny_config, workdir.path, 2)
  dead = subprocess.Popen([sys.executable, '-c', 'pass'])
  dead.wait()
  with open(lock, 'w') as f:
    json.dump({'pid': dead.pid, 'host': os.uname().nodename, 'since': 'then'}, f)
  assert _train(tiny_config, workdir.path, 2)['step'] == 2
  assert not os.path.exists(lock)                   # released at the end


@pytest.fixture(scope='module')
def trained_workdir(fmnist_data_dir, tmp_path_factory):
  from configs import tiny
  config = tiny.get_config()
  config.data.data_dir = fmnist_data_dir
  workdir = str(tmp_path_factory.mktemp('trained'))
  _train(config, workdir, 2)
  return workdir


@pytest.fixture
def read_only(tmp_path):
  """Makes a folder read-only for this process, root included (immutable), then undoes it."""
  made = []

  def make(path):
    made.append(path)
    if os.geteuid() == 0 and shutil.which('chattr') and subprocess.run(
        ['chattr', '+i', path], capture_output=True).returncode == 0:
      return
    os.chmod(path, 0o555)

  yield make
  for path in made:
    if os.geteuid() == 0 and shutil.which('chattr'):
      subprocess.run(['chattr', '-i', path], capture_output=True)
    os.chmod(path, 0o755)


def test_evaluating_a_read_only_workdir_prints_the_result(trained_workdir, tmp_path, read_only):
  workdir = str(tmp_path / 'copy')
  shutil.copytree(trained_workdir, workdir)
  read_only(workdir)
  assert not Workdir(workdir).writable()
  out = subprocess.run([sys.executable, 'scripts/evaluate.py', '--workdir', workdir,
                        '--statistics', 'ema'], cwd=REPO, capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-2000:]
  assert 'top1_error' in out.stdout and 'read-only' in out.stderr
  assert not os.path.exists(os.path.join(workdir, 'eval'))


def _user_mistakes(tmp, trained, data_dir):
  """{case: (command, stderr pattern)}: what a careless user or a hostile machine does."""
  train = [sys.executable, 'scripts/train.py', '--config', 'configs/tiny.py',
           f'--config.data.data_dir={data_dir}']
  broken = os.path.join(tmp, 'broken.py')
  with open(broken, 'w') as f:
    f.write('def get_config(:\n')
  a_file = os.path.join(tmp, 'a_file')
  open(a_file, 'w').close()
  empty_config = os.path.join(tmp, 'empty_config')
  shutil.copytree(trained, empty_config)
  open(os.path.join(empty_config, 'config.json'), 'w').close()
  return {
      'missing config file': (
          [sys.executable, 'scripts/train.py', '--config', 'configs/nope.py', '--workdir',
           tmp + '/w'], r'--config: .*No such file'),
      'broken config file': (
          [sys.executable, 'scripts/train.py', '--config', broken, '--workdir', tmp + '/w'],
          r'config file could not be loaded: invalid syntax'),
      'unknown override': (train + ['--workdir', tmp + '/w', '--config.nope=3'],
                           r"override names a field the config does not have: .*nope"),
      'extra argument': (train + ['--workdir', tmp + '/w', 'extra'],
                         r"unexpected arguments \['extra'\]"),
      'workdir is a file': (train + ['--workdir', a_file], r'is a file, not a folder'),
      'group size': (train + ['--workdir', tmp + '/g', '--config.model.bn.group_size=3'],
                     r'group_size=3 must be .* divisor of the device count 8'),
      'unknown split': (train + ['--workdir', tmp + '/s', '--config.data.eval_split=tset'],
                        r"'tset' is not a split of .*test, train"),
      'empty config.json': (
          [sys.executable, 'scripts/evaluate.py', '--workdir', empty_config],
          r'config.json is damaged'),
      'launcher with no process': (
          [sys.executable, 'scripts/launch_local.py', '--num_processes', '0', '--', 'true'],
          r'--num_processes 0: it must be at least 1'),
  }


def test_a_missing_or_empty_eval_split_is_refused_before_the_first_step(tiny_config, tmp_path):
  for split, message in (('nosuchsplit', r"'nosuchsplit' is not a split of .*test, train"),
                         ('test[:0]', r"split 'test\[:0\]' of .* is empty")):
    workdir = str(tmp_path / split)
    tiny_config.data.eval_split = split
    with pytest.raises(DataError, match=message):
      _train(tiny_config, workdir, 4)
    assert not os.path.exists(Workdir(workdir).metrics_file)    # nothing trained
    assert Checkpoints(Workdir(workdir).checkpoint_dir, read_only=True).all_steps() == []


def test_an_error_during_training_lets_the_checkpoint_being_written_finish(
    tiny_config, tmp_path, monkeypatch):
  finished = []
  real = Checkpoints.finish_in_flight_save
  monkeypatch.setattr(Checkpoints, 'finish_in_flight_save',
                      lambda self: (finished.append(True), real(self)))

  def failing(self, step, state, outputs):
    if step == 3:     # the step after a checkpoint step: its save may still be running
      raise RuntimeError('a bug in a hook')
    return {}
  monkeypatch.setattr(TargetsHook, '__call__', failing)
  with pytest.raises(RuntimeError, match='a bug in a hook'):
    _train(tiny_config, str(tmp_path), 4)
  assert finished == [True]
  checkpoint_dir = Workdir(str(tmp_path)).checkpoint_dir
  assert sorted(os.listdir(checkpoint_dir)) == ['2']               # complete, no tmp folder
  assert Checkpoints(checkpoint_dir, read_only=True).all_steps() == [2]


def test_allowing_a_config_change_on_a_finished_run_keeps_its_results(tiny_config, tmp_path):
  workdir = str(tmp_path)
  before = _train(tiny_config, workdir, 4)
  tiny_config.model.activation = 'sigmoid'          # same shapes, another network
  after = _train(tiny_config, workdir, 4, allow_config_change=True)
  assert after == before == Workdir(workdir).read_results()
  assert Workdir(workdir).load_config().model.activation == 'relu'   # nothing happened


def test_a_script_ends_even_when_a_library_thread_would_keep_it_alive():
  code = ('import threading, time\nfrom bn_repro import cli\ncli.EXIT_GRACE_SECONDS = 1\n'
          'threading.Thread(target=time.sleep, args=(600,)).start()\ncli._fail("stuck")\n')
  out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                       timeout=60)
  assert out.returncode == 2 and out.stderr.strip().endswith('error: stuck')


def test_population_stats_on_a_read_only_workdir_refuses_before_computing_and_exits(
    trained_workdir, tmp_path, read_only):
  workdir = str(tmp_path / 'copy')
  shutil.copytree(trained_workdir, workdir)
  read_only(workdir)
  out = subprocess.run([sys.executable, 'scripts/population_stats.py', '--workdir', workdir,
                        '--num_batches', '2'], cwd=REPO, capture_output=True, text=True,
                       timeout=240)
  assert out.returncode == 2, out.stderr[-2000:]
  assert re.match(r'error: .* is read-only: population statistics are saved in it',
                  out.stderr.strip().splitlines()[-1])
  assert 'Population statistics of' not in out.stdout      # refused before computing


def test_user_mistakes_end_in_one_line(trained_workdir, fmnist_data_dir, tmp_path):
  cases = _user_mistakes(str(tmp_path), trained_workdir, fmnist_data_dir)
  running = {name: subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)
             for name, (command, _) in cases.items()}
  for name, proc in running.items():
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 2, (name, stderr[-2000:])
    assert 'Traceback' not in stderr, (name, stderr[-2000:])
    message = stderr.strip().splitlines()[-1]      # the last line says what to fix
    assert message.startswith(('error:', 'launch_local.py: error:')), (name, message)
    assert re.search(cases[name][1], message), (name, message)


def _limit_file_size():
  resource.setrlimit(resource.RLIMIT_FSIZE, (30_000, 30_000))   # smaller than a checkpoint
  signal.signal(signal.SIGXFSZ, signal.SIG_IGN)   # a write past the limit then fails (EFBIG)


def test_a_full_disk_is_one_line_and_the_run_resumes_once_there_is_room(fmnist_data_dir,
                                                                         tmp_path):
  """On a real, tiny filesystem (a 3 MB tmpfs, where this machine lets the tests mount one)
  a checkpoint that no longer fits is refused before its write; after the filesystem grows,
  the same command resumes from the last checkpoint and finishes. Elsewhere, writes fail
  past a file-size limit instead, and the run still ends with the one line (after what the
  storage library's own threads print)."""
  workdir = tmp_path / 'disk'
  workdir.mkdir()
  mounted = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=3m', 'tmpfs', str(workdir)],
                           capture_output=True).returncode == 0
  command = [sys.executable, 'scripts/train.py', '--config', 'configs/tiny.py', '--workdir',
             str(workdir / 'run'), f'--config.data.data_dir={fmnist_data_dir}',
             '--config.train_for=12 steps']
  try:
    out = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300,
                         preexec_fn=None if mounted else _limit_file_size)
    if mounted:
      subprocess.run(['mount', '-o', 'remount,size=16m', str(workdir)], check=True)
      resumed = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
      saved = Checkpoints(str(workdir / 'run' / 'checkpoints'), read_only=True).all_steps()
  finally:
    if mounted:
      subprocess.run(['umount', str(workdir)], check=True)
  assert out.returncode == 2, out.stderr[-2000:]
  message = out.stderr.strip().splitlines()[-1]
  if mounted:
    assert re.match(r'error: not enough space for a checkpoint in .*MiB needed, .*MiB free; '
                    r'free space, then run again to resume$', message), message
    assert 'Traceback' not in out.stderr
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert re.search(r'Resumed from .*/checkpoints/\d+', resumed.stderr)
    assert saved[-1] == 12
  else:
    assert re.match(r'error: writing a checkpoint to .* failed .*File too large', message), message


def test_two_runs_building_the_dataset_at_once_both_succeed(tmp_path):
  code = ('import ml_collections\nfrom bn_repro.data import datasets\n'
          f'b = datasets.get_builder(ml_collections.ConfigDict(dict(dataset="fashion_mnist", '
          f'data_dir="{tmp_path}", local_dir=None, download=False, manual_dir=None)))\n'
          'print(b.info.splits["train"].num_examples)\n')
  procs = [subprocess.Popen([sys.executable, '-c', code], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True) for _ in range(2)]
  for proc in procs:
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-2000:]
    assert out.strip().splitlines()[-1] == '60000'


def test_the_launcher_passes_signals_on_and_leaves_no_orphans(tmp_path):
  child = ('import os, signal, sys, time\n'
           'signal.signal(signal.SIGTERM, lambda *_: (print("saved", flush=True), sys.exit(0)))\n'
           'signal.signal(signal.SIGINT, lambda *_: (print("saved", flush=True), sys.exit(130)))\n'
           'print("pid", os.getpid(), flush=True)\ntime.sleep(600)\n')
  # A signal to the launcher reaches both workers; a worker killed outright takes the other
  # one down with it; a killed launcher leaves no worker behind.
  for how in ('SIGTERM', 'SIGINT', 'SIGKILL', 'SIGKILL to one worker'):
    launcher = subprocess.Popen(
        [sys.executable, 'scripts/launch_local.py', '--num_processes', '2', '--', 'python', '-c',
         child], cwd=REPO, stdout=subprocess.PIPE, text=True)
    pids = []
    while len(pids) < 2:
      line = launcher.stdout.readline()
      assert line, 'the launcher ended early'
      if ' pid ' in line:
        pids.append(int(line.split()[-1]))
    if how == 'SIGKILL to one worker':
      os.kill(pids[1], signal.SIGKILL)
    else:
      launcher.send_signal(getattr(signal, how))
    output = launcher.communicate(timeout=60)[0]
    if how in ('SIGTERM', 'SIGINT'):
      expected = 0 if how == 'SIGTERM' else 130
      assert launcher.returncode == expected and output.count('saved') == 2, output
    if how == 'SIGKILL to one worker':
      assert launcher.returncode != 0 and output.count('saved') == 0, output
    deadline = time.time() + 10
    while time.time() < deadline and any(_alive(p) for p in pids):
      time.sleep(0.1)
    assert not any(_alive(p) for p in pids), f'orphans left after {how}'


def _alive(pid):
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  with open(f'/proc/{pid}/stat') as f:          # a zombie is dead, only not yet reaped
    return f.read().split()[2] != 'Z'


def test_a_signal_while_the_launcher_starts_its_workers_is_passed_on():
  """A signal while the workers start (a scheduler's SIGTERM may come then; here worker 0
  sends it at once) does not kill the launcher: it passes the signal on to every worker it
  started, starts no more, and exits with their status (0 if they save and exit, a
  worker's own status if the signal caught it before its handler)."""
  worker = ('trap "echo saved; exit 0" TERM; '
            '[ "$BN_REPRO_PROCESS_ID" = 0 ] && kill -TERM $PPID; sleep 30 & wait')
  launcher = subprocess.run(
      [sys.executable, 'scripts/launch_local.py', '--num_processes', '2', '--', 'sh', '-c',
       worker], cwd=REPO, capture_output=True, text=True, timeout=60)
  assert launcher.returncode >= 0, 'the launcher was killed by the signal'
  assert '[p0] saved' in launcher.stdout, (launcher.returncode, launcher.stdout)
