"""Multi-process start-up on JAX's own runtime (`jax.distributed`).

How a process finds the others, in order:
1. explicit values, from the flags --coordinator_address, --num_processes,
   --process_id (or the environment variables BN_REPRO_COORDINATOR_ADDRESS,
   BN_REPRO_NUM_PROCESSES, BN_REPRO_PROCESS_ID), for any cluster;
2. JAX's automatic detection, on Cloud TPU VMs (several workers) and under
   Slurm (srun with more than one task);
3. otherwise one process: nothing to initialize.

It must run before anything touches a device; the scripts do it first thing.
"""

from __future__ import annotations

import os

import jax
from absl import flags, logging

from bn_repro.errors import ConfigError

flags.DEFINE_string('coordinator_address', None,
                    'host:port of process 0, for multi-process runs outside Slurm / Cloud TPU.')
flags.DEFINE_integer('num_processes', None, 'Number of processes of a multi-process run.')
flags.DEFINE_integer('process_id', None, 'This process\'s index in a multi-process run.')

_ENV = {'coordinator_address': 'BN_REPRO_COORDINATOR_ADDRESS',
        'num_processes': 'BN_REPRO_NUM_PROCESSES', 'process_id': 'BN_REPRO_PROCESS_ID'}


def explicit_settings() -> dict:
  """The values given by flags (first) or environment variables; {} when none are."""
  values = {}
  for name, env in _ENV.items():
    value = flags.FLAGS[name].value if flags.FLAGS.is_parsed() else None
    if value is None and os.environ.get(env):
      value = os.environ[env]
    if value is not None:
      values[name] = value if name == 'coordinator_address' else int(value)
  if values and set(values) != set(_ENV):
    missing = sorted(set(_ENV) - set(values))
    raise ConfigError(f'multi-process settings need all of --coordinator_address, '
                      f'--num_processes and --process_id; missing {", ".join(missing)}')
  return values


def detected_cluster() -> str | None:
  """'slurm' or 'tpu' when running as one of several processes there, else None."""
  if int(os.environ.get('SLURM_NTASKS', '1')) > 1 and 'SLURM_PROCID' in os.environ:
    return 'slurm'
  hostnames = os.environ.get('TPU_WORKER_HOSTNAMES', '')
  if len([h for h in hostnames.split(',') if h]) > 1:
    return 'tpu'
  return None


def initialize() -> None:
  """Joins the other processes of this run, if there are any (idempotent)."""
  if jax.distributed.is_initialized():
    return
  settings = explicit_settings()
  if settings:
    if settings['num_processes'] == 1:
      return
    jax.distributed.initialize(**settings)
  elif detected_cluster():
    jax.distributed.initialize()  # JAX reads Slurm's / Cloud TPU's environment
  else:
    return
  logging.info('Process %d of %d, %d local devices of %d', jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count())
