"""Whole chains on gs:// paths, against an offline Cloud Storage emulator
(tests/gcs_emulator.py): train, resume, population statistics, evaluation, ensemble on a
gs:// workdir; a dataset built into a gs:// data_dir, and the ICS probe with its plots.

Every client goes the way it goes on Google Cloud: the workdir's files through
etils.epath and TensorFlow's GCS client, TensorBoard through TensorFlow,
checkpoints through orbax's tensorstore. Nothing may land on the local disk
(os.path.abspath('gs://b/x') is './gs:/b/x').
"""

import fcntl
import gzip
import json
import os
import struct
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


def _read(port, name, *, binary=False):
  url = (f'http://127.0.0.1:{port}/download/storage/v1/b/{BUCKET}/o/'
         f'{urllib.parse.quote(name, safe="")}?alt=media')
  data = urllib.request.urlopen(url).read()
  return data if binary else data.decode()


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


def _first_items(source, target, count):
  """An IDX .gz file holding the first `count` items of `source` (its header says so)."""
  with gzip.open(source, 'rb') as f:
    data = f.read()
  dims = data[3]                                 # the magic number's last byte
  header = 4 + 4 * dims
  shape = struct.unpack(f'>{dims}I', data[4:header])
  size = count * (shape[1] * shape[2] if dims == 3 else 1)
  with gzip.open(target, 'wb') as f:
    f.write(data[:4] + struct.pack('>I', count) + data[8:header] + data[header:header + size])


def test_a_gs_data_dir_and_the_ics_probe_with_its_plots_on_a_gs_workdir(gcs, tmp_path):
  env, port = gcs
  local_dir = tmp_path / 'idx'                   # Debian's files, cut to 256 images each
  local_dir.mkdir()
  for name in datasets.IDX_FILES.values():
    _first_items(os.path.join(datasets.DEBIAN_FASHION_MNIST, name), local_dir / name, 256)
  cwd = tmp_path / 'cwd'
  cwd.mkdir()
  workdir, layer = f'gs://{BUCKET}/runs/probe', 'inception_3a/b1x1'
  scripts = os.path.join(REPO, 'scripts')
  common = ['--config', os.path.join(REPO, 'configs', 'tiny.py'), '--workdir', workdir,
            f'--config.data.data_dir=gs://{BUCKET}/tfds', f'--config.data.local_dir={local_dir}']
  # One run builds the dataset into the bucket, trains with the probe at steps 0, 2 and 4,
  # and plots (appending to records on gs:// is the chain test's resume).
  _run(env, os.path.join(scripts, 'ics_probe.py'), *common, '--config.train_for=4 steps',
       '--layers', layer, '--every_steps', '2', cwd=cwd)

  built = _objects(port, 'tfds/local_fashion_mnist/')
  assert 'tfds/local_fashion_mnist/3.0.1/dataset_info.json' in built, built
  assert any('-train.tfrecord-' in n for n in built) and any('-test.tfrecord-' in n for n in built)
  info = json.loads(_read(port, 'tfds/local_fashion_mnist/3.0.1/dataset_info.json'))
  assert {s['name']: int(s['shardLengths'][0]) for s in info['splits']} == \
      {'train': 256, 'test': 256}
  records = [json.loads(line) for line in _read(port, 'runs/probe/ics_probe.jsonl').splitlines()]
  assert [(r['step'], r['layer']) for r in records] == [(0, layer), (2, layer), (4, layer)]
  for plot in ('ics_inception_3a_b1x1.png', 'ics_inception_3a_b1x1_drift.png'):
    assert _read(port, f'runs/probe/{plot}', binary=True).startswith(b'\x89PNG')
  assert json.loads(_read(port, 'runs/probe/results.json'))['step'] == 4
  assert os.listdir(cwd) == [] and not os.path.exists(os.path.join(REPO, 'gs:'))
  assert sorted(os.listdir(local_dir)) == sorted(datasets.IDX_FILES.values())
