"""Every test runs on CPU with 8 simulated devices, set before jax is imported."""

import os

import tempfile

# 8 simulated devices, and a cheaper LLVM pipeline: tests compile many tiny
# programs, whose run time barely changes while their compile time drops ~35%.
os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                           ' --xla_force_host_platform_device_count=8'
                           ' --xla_backend_optimization_level=0').strip()
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
# Identical programs compiled by different tests (and by the scripts the tests
# start) are compiled once per session.
os.environ.setdefault('JAX_COMPILATION_CACHE_DIR',
                      tempfile.mkdtemp(prefix='bn_repro_jax_cache_'))
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
