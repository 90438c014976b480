"""Every test runs on CPU with 8 simulated devices, set before jax is imported."""

import os

import atexit
import importlib.metadata
import shutil
import tempfile


def _jaxlib_version() -> tuple[int, ...]:
  return tuple(int(part) for part in importlib.metadata.version('jaxlib').split('.')[:2])


# 8 simulated devices, and cheaper XLA CPU code generation: tests compile many
# tiny programs, whose run time barely changes while their compile time drops
# severalfold (docs/performance.md). An unknown flag is fatal to XLA: jaxlib 0.12
# no longer has the switch for the CPU fusion emitters (it always uses them).
_CHEAP_CODEGEN = ['--xla_backend_optimization_level=0',
                  '--xla_cpu_enable_concurrency_optimized_scheduler=false']
if _jaxlib_version() < (0, 12):
  _CHEAP_CODEGEN.append('--xla_cpu_use_fusion_emitters=false')
os.environ['XLA_FLAGS'] = ' '.join([os.environ.get('XLA_FLAGS', ''),
                                    '--xla_force_host_platform_device_count=8',
                                    *_CHEAP_CODEGEN]).strip()
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
# Identical programs compiled by different tests (and by the scripts the tests
# start) are compiled once per session.
if 'JAX_COMPILATION_CACHE_DIR' not in os.environ:
  os.environ['JAX_COMPILATION_CACHE_DIR'] = tempfile.mkdtemp(prefix='bn_repro_jax_cache_')
  atexit.register(shutil.rmtree, os.environ['JAX_COMPILATION_CACHE_DIR'], ignore_errors=True)
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0.5')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import jax  # noqa: E402
import pytest  # noqa: E402

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def pytest_configure(config):
  del config
  assert jax.device_count() == 8, (
      f'tests need 8 simulated CPU devices, found {jax.device_count()}; '
      'was jax imported before tests/conftest.py set XLA_FLAGS?')


@pytest.fixture
def repo_root():
  return REPO_ROOT


@pytest.fixture(scope='session')
def fmnist_data_dir(tmp_path_factory):
  """A tfds data_dir holding Fashion-MNIST built from Debian's IDX files (once per session)."""
  import ml_collections
  from bn_repro.data import datasets
  data_dir = str(tmp_path_factory.mktemp('tfds'))
  datasets.get_builder(ml_collections.ConfigDict(dict(
      dataset='fashion_mnist', data_dir=data_dir, local_dir=None, download=False,
      manual_dir=None)))
  return data_dir


@pytest.fixture
def tiny_config(fmnist_data_dir):
  """configs/tiny.py reading the session's Fashion-MNIST."""
  from configs import tiny
  config = tiny.get_config()
  config.data.data_dir = fmnist_data_dir
  return config
