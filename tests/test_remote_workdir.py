"""Whole chains on gs:// paths, against an offline Cloud Storage emulator
(tests/gcs_emulator.py): train, resume, population statistics, evaluation, ensemble on a
gs:// workdir; a dataset built into a gs:// data_dir, and the ICS probe with its plots.

Every client goes the way it goes on Google Cloud: the workdir's files through
etils.epath and TensorFlow's GCS client, TensorBoard through TensorFlow,
checkpoints through orbax's tensorstore. Nothing may land on the local disk
(os.path.abspath('gs://b/x') is './gs:/b/x').
"""

import fcntl
import json
import os
import subprocess
import sys
import tempfile
import threading
import urllib.parse
import urllib.request

import pytest

from bn_repro.data import datasets

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUCKET = 'bn-repro-test'


@pytest.fixture(scope='module')
def gcs():
  """(environment for clients, emulator port) of an emulator running for this module."""
  from tests.gcs_emulator import client_environment
  server = subprocess.Popen([sys.executable, os.path.join(REPO, 'tests', 'gcs_emulator.py'),
                             BUCKET], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
  info = json.loads(server.stdout.readline())
  sdk = tempfile.mkdtemp(prefix='cloudsdk_')
  env = dict(os.environ, **client_environment(info['port'], info['proxy_port'], info['ca'], sdk))
  yield env, info['port']
  server.stdin.close()
  server.wait(timeout=30)


def _objects(port, prefix):
  query = urllib.parse.urlencode({'prefix': prefix})
  names, token = [], None
  while True:
    url = f'http://127.0.0.1:{port}/storage/v1/b/{BUCKET}/o?{query}'
    if token:
      url += f'&pageToken={token}'
    listing = json.loads(urllib.request.urlopen(url).read())
    names += [item['name'] for item in listing.get('items', [])]
    token = listing.get('nextPageToken')
    if not token:
      return names


def _read(port, name):
  url = (f'http://127.0.0.1:{port}/download/storage/v1/b/{BUCKET}/o/'
         f'{urllib.parse.quote(name, safe="")}?alt=media')
  return urllib.request.urlopen(url).read().decode()


def _run(env, *args, cwd):
  out = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True,
                       text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  return out


def test_train_resume_population_evaluate_ensemble_on_a_gs_workdir(gcs, fmnist_data_dir,
                                                                    tmp_path):
  env, port = gcs
  workdir = f'gs://{BUCKET}/runs/a'
  cwd = str(tmp_path)        # any './gs:' folder would appear here
  scripts = os.path.join(REPO, 'scripts')
  train = [os.path.join(scripts, 'train.py'), '--config', os.path.join(REPO, 'configs', 'tiny.py'),
           '--workdir', workdir, f'--config.data.data_dir={fmnist_data_dir}']
  _run(env, *train, '--config.train_for=2 steps', cwd=cwd)
  _run(env, *train, '--config.train_for=4 steps', cwd=cwd)          # resumes from step 2
  _run(env, os.path.join(scripts, 'population_stats.py'), '--workdir', workdir,
       '--num_batches=2', '--batch_size=16', cwd=cwd)
  evaluated = _run(env, os.path.join(scripts, 'evaluate.py'), '--workdir', workdir,
                   '--statistics', 'population', '--save_probs', cwd=cwd)
  ensemble = _run(env, os.path.join(scripts, 'ensemble.py'), '--workdirs',
                  f'{workdir},{workdir}', '--statistics', 'population', cwd=cwd)
  assert 'reusing the probabilities saved' in ensemble.stdout

  names = _objects(port, 'runs/a/')
  short = {n[len('runs/a/'):] for n in names}
  for expected in ('config.json', 'metrics.jsonl', 'results.json',
                   'population_stats/4/meta.json', 'population_stats/4/ema_gap.json',
                   'eval/test__256__population_1crop_step4.json',
                   'eval/test__256__population_1crop_step4.npz'):
    assert expected in short, (expected, sorted(short))
  assert any(n.startswith('checkpoints/4/model/') for n in short)
  assert any(n.startswith('events.out.tfevents') for n in short)
  assert not any(n.startswith('.lock') for n in short)            # released
  results = json.loads(_read(port, 'runs/a/results.json'))
  assert results['step'] == 4
  steps = [json.loads(line)['step'] for line in _read(port, 'runs/a/metrics.jsonl').splitlines()
           if 'train_loss' in line]
  assert steps == [1, 2, 3, 4]                                    # each step once
  record = json.loads(_read(port, 'runs/a/eval/test__256__population_1crop_step4.json'))
  assert json.loads(evaluated.stdout.strip().splitlines()[-1])['top1_error'] == \
      pytest.approx(record['top1_error'])
  assert os.listdir(cwd) == [] and not os.path.exists(os.path.join(REPO, 'gs:'))


class _Builder:
  """What the dataset-preparation lock sees of a tfds builder."""
  name = 'local_fashion_mnist'
  _data_dir_root = f'gs://{BUCKET}/tfds'

  def __init__(self):
    self.prepared = 0

  def download_and_prepare(self):
    self.prepared += 1


def test_preparing_into_a_gs_data_dir_locks_a_local_file_outside_the_working_folder(
    tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  builder = _Builder()
  datasets._prepare_on_process_zero(builder)     # noqa: SLF001
  assert builder.prepared == 1
  assert os.listdir(tmp_path) == []              # no './gs:/bn-repro-test/tfds/.lock'
  lock = datasets._prepare_lock_file(builder)    # noqa: SLF001
  assert lock.startswith(tempfile.gettempdir() + os.sep) and os.path.exists(lock)
  with datasets._locked(lock):                   # noqa: SLF001
    refused = []

    def try_lock():   # another run on this machine (its own open file) must wait its turn
      fd = os.open(lock, os.O_RDONLY)
      try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
      except BlockingIOError:
        refused.append(True)
      finally:
        os.close(fd)

    thread = threading.Thread(target=try_lock)
    thread.start()
    thread.join()
  assert refused == [True]
