"""Process start-up: joining the other processes of a run, the accelerator check, the
compilation cache, and requeueing a preempted Slurm job.

How a process finds the others, in order:
1. explicit values, passed in (the scripts' flags --coordinator_address,
   --num_processes, --process_id, defined in cli.py) or from the environment,
   BN_REPRO_COORDINATOR_ADDRESS, BN_REPRO_NUM_PROCESSES, BN_REPRO_PROCESS_ID or
   JAX's names JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID (in
   this order of precedence), for any cluster; some of them alone complete a
   detected cluster (JAX fills in the rest from it);
2. a Cloud TPU VM pod slice (BN_REPRO_TPU_POD=1, set by scripts/tpu_vm_train.sh,
   or several TPU_WORKER_HOSTNAMES): JAX reads the workers from the TPU metadata;
3. a cluster JAX's own jax.distributed.initialize() detects, asked the way it
   asks (jax_cluster_env): Open MPI's mpirun (OMPI_MCA_orte_hnp_uri,
   OMPI_COMM_WORLD_*), Slurm (srun), Kubernetes (with the `kubernetes` package),
   when it reports more than one process. JAX reads the coordinator, the process
   count and index from it; this module adds the GPUs of each process (JAX alone
   gives every Slurm task or MPI rank one GPU, [local id], leaving 7 of 8 idle
   with one process per node). mpi4py is never imported unasked (JAX's Mpi4pyCluster
   is opt-in; JAX 0.12 uses it itself under Open MPI 5);
4. otherwise one process: nothing to initialize.

It must run before anything touches a device; the scripts do it first thing. This
module reads no flags: cli.py passes their values in.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import time
import warnings

import jax
from absl import logging
# JAX's registry of cluster environments: no public API asks it (JAX 0.10 to 0.12), only
# jax.distributed.initialize() does. Used in jax_cluster_env() alone.
from jax._src import clusters as jax_clusters

from bn_repro.errors import ConfigError, UserError

# Each setting's environment variables, the first set wins (after a value passed in).
_ENV = {'coordinator_address': ('BN_REPRO_COORDINATOR_ADDRESS', 'JAX_COORDINATOR_ADDRESS'),
        'num_processes': ('BN_REPRO_NUM_PROCESSES', 'JAX_NUM_PROCESSES'),
        'process_id': ('BN_REPRO_PROCESS_ID', 'JAX_PROCESS_ID')}
_FLAGS = {'coordinator_address': '--coordinator_address', 'num_processes': '--num_processes',
          'process_id': '--process_id'}
# JAX's cluster_detection_method names of its Cloud TPU environments: they ask the TPU VM's
# metadata server, so the TPU rule (detected_tpu_pod) decides without a request.
_JAX_TPU_CLUSTERS = ('tpu', 'gcetpu', 'gketpu')
# Where the accelerator check looks for device files; tests point it at a fake /dev.
DEVICE_ROOT_ENV = 'BN_REPRO_DEVICE_ROOT'
INSTALL = {'gpu': 'make setup ACCEL=cuda12 (or cuda13, matching the driver)',
           'tpu': 'make setup ACCEL=tpu'}


def explicit_settings(given: dict | None = None) -> dict:
  """The values `given` ({name: value or None}, first) or set in the environment, as many
  as are set."""
  values = {}
  for name, names in _ENV.items():
    value, source = (given or {}).get(name), _FLAGS[name]
    for env in names:
      if value is None and os.environ.get(env):
        value, source = os.environ[env], env
    if value is None:
      continue
    try:
      values[name] = value if name == 'coordinator_address' else int(value)
    except ValueError:
      raise ConfigError(f'{source}={value!r}: expected a number') from None
  return values


def jax_cluster_env() -> type | None:
  """The cluster environment (a ClusterEnv class) that jax.distributed.initialize() would
  detect here, found as it finds it: the first of its registry that is present, skipping
  the opt-in ones (mpi4py) and the Cloud TPU ones (see _JAX_TPU_CLUSTERS); None if none."""
  for env in jax_clusters.ClusterEnv._cluster_types:
    if env.opt_in_only_method or env.name in _JAX_TPU_CLUSTERS:
      continue
    with warnings.catch_warnings(record=True) as caught:
      # JAX warns in every Kubernetes pod that lacks the `kubernetes` package: one log line.
      warnings.simplefilter('always')
      present = env.is_env_present()
    for warning in caught:
      logging.info('%s: %s', env.__name__, ' '.join(str(warning.message).split()))
    if present:
      return env
  return None


def detected_tpu_pod() -> bool:
  """A Cloud TPU VM pod slice, as scripts/tpu_vm_train.sh starts it or GKE describes it."""
  hostnames = os.environ.get('TPU_WORKER_HOSTNAMES', '')
  return (os.environ.get('BN_REPRO_TPU_POD') == '1' or
          len([h for h in hostnames.split(',') if h]) > 1)


def detected_cluster() -> tuple[str, int | None] | None:
  """(the cluster's name, its process count) when this process is one of several, else None.
  The name is 'tpu' or a JAX ClusterEnv's ('OmpiCluster', 'SlurmCluster', 'K8sCluster')."""
  if detected_tpu_pod():
    return 'tpu', None   # the count comes from the TPU metadata, in JAX
  env = jax_cluster_env()
  if env is None:
    return None
  try:
    count = env.get_process_count()
  except Exception as e:   # JAX found the cluster but cannot read it (no mpi4py, no API access)
    raise UserError(f'JAX detected {env.__name__} but could not read its process count: '
                    f'{" ".join(str(e).split())}') from e
  return (env.__name__, count) if count > 1 else None


def _count(text: str | None) -> int:
  return len([part for part in (text or '').split(',') if part.strip()])


def _slurm_tasks_on_this_node() -> int:
  if os.environ.get('SLURM_NTASKS_PER_NODE'):
    return int(os.environ['SLURM_NTASKS_PER_NODE'])
  # SLURM_TASKS_PER_NODE looks like '8(x4)' or '2,1': the first number is this layout's.
  first = os.environ.get('SLURM_TASKS_PER_NODE', '1').split(',')[0].split('(')[0]
  return int(first or 1)


def _gpus_listed() -> int:
  """GPUs nvidia-smi lists on this machine (0 without the driver, or if it hangs)."""
  if not shutil.which('nvidia-smi'):
    return 0
  try:
    listed = subprocess.run(['nvidia-smi', '-L'], capture_output=True, text=True, timeout=60)
  except (OSError, subprocess.TimeoutExpired):
    return 0
  return len([line for line in listed.stdout.splitlines() if line.startswith('GPU ')])


def _gpus_visible() -> int:
  """GPUs this task may use: CUDA_VISIBLE_DEVICES when Slurm (or the user) set it, else
  what nvidia-smi lists."""
  if 'CUDA_VISIBLE_DEVICES' in os.environ:
    return _count(os.environ['CUDA_VISIBLE_DEVICES'])
  return _gpus_listed()


def slurm_local_device_ids() -> list[int] | None:
  """The GPU ids (as this task sees them) that this Slurm task should use; None without GPUs.

  - every task sees only its own GPUs (--gpus-per-task, or one task per node): all of them;
  - every task of the node sees all the node's GPUs (--gpus-per-node with several tasks):
    an equal share, by SLURM_LOCALID.
  """
  visible = _gpus_visible()
  if not visible:
    return None
  tasks = _slurm_tasks_on_this_node()
  on_node = int(os.environ.get('SLURM_GPUS_ON_NODE') or _count(os.environ.get('SLURM_STEP_GPUS'))
                or visible)
  if tasks > 1 and visible == on_node and visible % tasks == 0:
    share = visible // tasks
    local = int(os.environ.get('SLURM_LOCALID', '0'))
    return list(range(local * share, (local + 1) * share))
  return list(range(visible))


def mpi_local_device_ids() -> list[int] | None:
  """The GPU ids this Open MPI rank should use: an equal share of the GPUs it sees among the
  node's ranks (all of them with one rank per node); all it sees if it sees fewer than
  there are ranks (each was given its own); None (JAX's default, [local rank]) otherwise."""
  visible = _gpus_visible()
  ranks = int(os.environ.get('OMPI_COMM_WORLD_LOCAL_SIZE') or 0)
  if not visible or not ranks:
    return None
  if visible % ranks == 0:
    share = visible // ranks
    local = int(os.environ.get('OMPI_COMM_WORLD_LOCAL_RANK', '0'))
    return list(range(local * share, (local + 1) * share))
  return list(range(visible)) if visible < ranks else None


_LOCAL_DEVICE_IDS = {'SlurmCluster': slurm_local_device_ids,
                     'OmpiCluster': mpi_local_device_ids}


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> None:
  """Joins the other processes of this run, if there are any (idempotent)."""
  if jax.distributed.is_initialized():
    return
  settings = explicit_settings({'coordinator_address': coordinator_address,
                                'num_processes': num_processes, 'process_id': process_id})
  if len(settings) == len(_ENV):
    if settings['num_processes'] == 1:
      return
    logging.info('Cluster: explicit settings')
  else:
    cluster = detected_cluster()
    if cluster is None:
      if settings:
        missing = ', '.join(_FLAGS[name] for name in _ENV if name not in settings)
        raise ConfigError(f'multi-process settings need all of --coordinator_address, '
                          f'--num_processes and --process_id (or their environment '
                          f'variables) outside a cluster JAX detects; missing {missing}')
      return
    name, count = cluster
    logging.info('Cluster: %s (detected as JAX detects it)%s', name,
                 f', {count} processes' if count else '')
    ids = _LOCAL_DEVICE_IDS[name]() if name in _LOCAL_DEVICE_IDS else None
    if ids is not None:
      settings['local_device_ids'] = ids
  logging.info('jax.distributed.initialize(%s)',
               ', '.join(f'{k}={v}' for k, v in settings.items()) or 'from the cluster')
  jax.distributed.initialize(**settings)
  logging.info('Process %d of %d, %d local devices of %d', jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count())


def _device_files(pattern: str) -> list[str]:
  return glob.glob(os.path.join(os.environ.get(DEVICE_ROOT_ENV) or '/dev', pattern))


def accelerator_on_this_machine() -> str | None:
  """'gpu' or 'tpu' when the machine has one (whatever JAX found), else None."""
  if _device_files('nvidia[0-9]*') or _gpus_listed():
    return 'gpu'
  if _device_files('accel[0-9]*') or _device_files('vfio/[0-9]*'):
    return 'tpu'
  return None


def cpu_asked_for() -> bool:
  """Whether JAX_PLATFORMS (or the jax_platforms config) names the CPU alone."""
  platforms = [p.strip() for p in (jax.config.jax_platforms or '').split(',') if p.strip()]
  return platforms == ['cpu']


def running_on() -> str:
  """What JAX runs on, for a script's output: 'GPU (8 x NVIDIA H100 80GB HBM3)', or 'CPU
  (...)' and, on a machine with a GPU or TPU, why and how to install JAX for it."""
  backend = jax.default_backend()
  text = f'{backend.upper()} ({jax.device_count()} x {jax.devices()[0].device_kind})'
  present = accelerator_on_this_machine() if backend == 'cpu' else None
  if not present:
    return text
  if cpu_asked_for():
    return f'{text}, as JAX_PLATFORMS=cpu asks, although this machine has a {present.upper()}'
  return (f'{text}, although this machine has a {present.upper()}: JAX for it is not '
          f'installed (`{INSTALL[present]}`)')


def check_backend(allow_cpu: bool) -> None:
  """Logs what JAX runs on; stops if that is the CPU on a machine with an accelerator,
  unless the CPU was asked for (allow_cpu, or JAX_PLATFORMS=cpu)."""
  devices = jax.devices()
  logging.info('JAX %s on %s: %d %s device(s) (%d local), %d process(es)', jax.__version__,
               jax.default_backend(), len(devices), devices[0].device_kind,
               jax.local_device_count(), jax.process_count())
  present = accelerator_on_this_machine() if jax.default_backend() == 'cpu' else None
  if not present:
    return
  if cpu_asked_for():
    logging.info('JAX_PLATFORMS=cpu: the %s of this machine is not used, as asked',
                 present.upper())
  elif allow_cpu:
    logging.warning('Running on the CPU although this machine has a %s (--allow_cpu); '
                    '`%s` installs JAX for it', present.upper(), INSTALL[present])
  else:
    raise UserError(f'this machine has a {present.upper()} but JAX runs on the CPU: install '
                    f'JAX for it with `{INSTALL[present]}`, or pass --allow_cpu')


def enable_compilation_cache(directory: str | None, *, is_default: bool = False) -> None:
  """JAX's persistent compilation cache in `directory` (None: off). An explicit
  JAX_COMPILATION_CACHE_DIR in the environment wins over a default directory."""
  if not directory:
    return
  if os.environ.get('JAX_COMPILATION_CACHE_DIR') and is_default:
    logging.info('Compilation cache: %s', os.environ['JAX_COMPILATION_CACHE_DIR'])
    return
  directory = directory if '://' in directory else os.path.expanduser(directory)
  jax.config.update('jax_compilation_cache_dir', directory)
  # Cache what takes a while to compile (the steps), not every small program.
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 1.0)
  logging.info('Compilation cache: %s', directory)


def requeue_if_asked() -> bool:
  """Requeues this Slurm job (process 0 only) when the job asked for it (BN_REPRO_REQUEUE=1,
  set by scripts/slurm_train.sbatch); the requeued job resumes from the checkpoint."""
  if os.environ.get('BN_REPRO_REQUEUE') != '1' or 'SLURM_JOB_ID' not in os.environ:
    return False
  if jax.process_index() != 0:
    return True
  job = os.environ['SLURM_JOB_ID']
  result = subprocess.run(['scontrol', 'requeue', job], capture_output=True, text=True)
  if result.returncode:
    logging.error('scontrol requeue %s failed: %s', job, result.stderr.strip())
    return False
  logging.info('requeued Slurm job %s; it resumes from the checkpoint', job)
  time.sleep(1)
  return True
