"""Clusters other than Slurm and Cloud TPU: whatever JAX's own start-up detects (Open MPI's
mpirun, Kubernetes), and JAX's environment names for explicit settings."""

import json
import os
import subprocess
import sys

import pytest
from jax._src import clusters as jax_clusters

from bn_repro.errors import ConfigError
from bn_repro.parallel import distributed
from tests.test_cluster import REPO, STARTUP, free_coordinator_port

_CLUSTER_PREFIXES = ('SLURM_', 'OMPI_', 'PMIX_', 'KUBERNETES_', 'TPU_', 'MEGASCALE_',
                     'BN_REPRO_', 'JAX_COORDINATOR', 'JAX_NUM_PROCESSES', 'JAX_PROCESS_ID',
                     'JAX_LOCAL_DEVICE_IDS')


def _no_cluster(env):
  return {k: v for k, v in env.items() if not k.startswith(_CLUSTER_PREFIXES)}


def test_jax_still_has_the_cluster_registry_we_read():
  """jax_cluster_env() reads JAX's private registry: this fails first if JAX changes it."""
  registry = jax_clusters.ClusterEnv._cluster_types
  by_name = {env.__name__: env for env in registry}
  for name in ('OmpiCluster', 'SlurmCluster', 'Mpi4pyCluster', 'GceTpuCluster',
               'GkeTpuCluster', 'K8sCluster'):
    assert name in by_name, name
    for method in ('is_env_present', 'get_process_count', 'get_coordinator_address'):
      assert callable(getattr(by_name[name], method))
  assert by_name['Mpi4pyCluster'].opt_in_only_method
  assert not by_name['OmpiCluster'].opt_in_only_method
  assert {by_name['GceTpuCluster'].name, by_name['GkeTpuCluster'].name} <= set(
      distributed._JAX_TPU_CLUSTERS)
  # Open MPI comes before Slurm: mpirun inside a Slurm allocation is Open MPI's job.
  assert registry.index(by_name['OmpiCluster']) < registry.index(by_name['SlurmCluster'])


def _ompi(size, rank, local_rank=0, local_size=1, job=1234 * 4096):
  return {'OMPI_MCA_orte_hnp_uri': f'{job}.0;tcp://127.0.0.1,10.0.0.2:40123',
          'OMPI_COMM_WORLD_SIZE': str(size), 'OMPI_COMM_WORLD_RANK': str(rank),
          'OMPI_COMM_WORLD_LOCAL_RANK': str(local_rank),
          'OMPI_COMM_WORLD_LOCAL_SIZE': str(local_size)}


_SLURM = dict(SLURM_JOB_ID='77', SLURM_STEP_NODELIST='node[01-02]', SLURM_NTASKS='2',
              SLURM_PROCID='1', SLURM_LOCALID='0')


@pytest.mark.parametrize('case,env,expected', [
    ('nothing', {}, None),
    ('mpirun -np 2', _ompi(2, 1), ('OmpiCluster', 2)),
    ('mpirun -np 1', _ompi(1, 0), None),
    ('srun -n 2', _SLURM, ('SlurmCluster', 2)),
    ('srun -n 1', dict(_SLURM, SLURM_NTASKS='1', SLURM_PROCID='0'), None),
    ('mpirun in a Slurm allocation', dict(_SLURM, **_ompi(4, 3)), ('OmpiCluster', 4)),
    ('a Kubernetes pod without the kubernetes package',
     {'KUBERNETES_SERVICE_HOST': '10.0.0.1'}, None),
    ('a TPU pod slice', {'BN_REPRO_TPU_POD': '1'}, ('tpu', None)),
])
def test_the_cluster_is_detected_as_jax_detects_it(case, env, expected, monkeypatch):
  for name in os.environ:
    if name.startswith(_CLUSTER_PREFIXES):
      monkeypatch.delenv(name)
  for name, value in env.items():
    monkeypatch.setenv(name, value)
  imported = 'mpi4py' in sys.modules
  assert distributed.detected_cluster() == expected, case
  assert ('mpi4py' in sys.modules) == imported   # never imported unasked


@pytest.mark.parametrize('env,expected', [
    (dict(OMPI_COMM_WORLD_LOCAL_SIZE='1', OMPI_COMM_WORLD_LOCAL_RANK='0',
          CUDA_VISIBLE_DEVICES='0,1,2,3,4,5,6,7'), [0, 1, 2, 3, 4, 5, 6, 7]),
    (dict(OMPI_COMM_WORLD_LOCAL_SIZE='2', OMPI_COMM_WORLD_LOCAL_RANK='1',
          CUDA_VISIBLE_DEVICES='0,1,2,3,4,5,6,7'), [4, 5, 6, 7]),
    (dict(OMPI_COMM_WORLD_LOCAL_SIZE='8', OMPI_COMM_WORLD_LOCAL_RANK='5',
          CUDA_VISIBLE_DEVICES='0,1,2,3,4,5,6,7'), [5]),
    (dict(OMPI_COMM_WORLD_LOCAL_SIZE='8', OMPI_COMM_WORLD_LOCAL_RANK='5',
          CUDA_VISIBLE_DEVICES='5'), [0]),           # a wrapper gave each rank its GPU
    (dict(OMPI_COMM_WORLD_LOCAL_SIZE='3', OMPI_COMM_WORLD_LOCAL_RANK='2',
          CUDA_VISIBLE_DEVICES='0,1,2,3,4,5,6,7'), None),   # JAX's default: [local rank]
    (dict(OMPI_COMM_WORLD_LOCAL_SIZE='1', OMPI_COMM_WORLD_LOCAL_RANK='0',
          CUDA_VISIBLE_DEVICES=''), None),
])
def test_each_mpi_rank_gets_its_gpus(env, expected, monkeypatch):
  for name, value in env.items():
    monkeypatch.setenv(name, value)
  assert distributed.mpi_local_device_ids() == expected


def test_some_settings_outside_a_cluster_are_a_one_line_error(monkeypatch):
  for name in os.environ:
    if name.startswith(_CLUSTER_PREFIXES):
      monkeypatch.delenv(name)
  monkeypatch.setenv('JAX_COORDINATOR_ADDRESS', '10.0.0.1:1234')
  monkeypatch.setenv('JAX_NUM_PROCESSES', '2')
  with pytest.raises(ConfigError, match='missing --process_id'):
    distributed.initialize()
  monkeypatch.setenv('BN_REPRO_PROCESS_ID', 'first')
  with pytest.raises(ConfigError, match="BN_REPRO_PROCESS_ID='first': expected a number"):
    distributed.initialize()


def _start_two(env_of, expected_log):
  """Runs STARTUP as processes 0 and 1 (environments env_of(0), env_of(1)) on this host;
  their results once both have joined."""
  procs = [subprocess.Popen([sys.executable, '-c', STARTUP], cwd=REPO, env=env_of(index),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for index in range(2)]
  results = []
  for proc in procs:
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-2000:]
    for line in expected_log:
      assert line in err, err[-2000:]
    results.append(json.loads(out.strip().splitlines()[-1]))
  assert sorted(r['process'] for r in results) == [0, 1]
  return results


def test_two_open_mpi_ranks_join_as_mpirun_starts_them():
  """`mpirun -np 2 --npernode 1` on two 8-GPU nodes, simulated on this host: JAX finds the
  coordinator in the launcher's URI, the count and rank in OMPI_COMM_WORLD_*; each rank uses
  all 8 GPUs of its node (JAX alone: [local rank] = [0]). 4 CPU devices stand in for them."""
  port = free_coordinator_port()
  job = (port - 61440) * 4096    # JAX: port 61440 + (job // 4096) % 4096

  def env_of(rank):
    return dict(_no_cluster(os.environ), **_ompi(2, rank, job=job),
                CUDA_VISIBLE_DEVICES='0,1,2,3,4,5,6,7', JAX_PLATFORMS='cpu',
                XLA_FLAGS='--xla_force_host_platform_device_count=4')

  results = _start_two(env_of, [
      'Cluster: OmpiCluster (detected as JAX detects it), 2 processes',
      'jax.distributed.initialize(local_device_ids=[0, 1, 2, 3, 4, 5, 6, 7])'])
  for r in results:
    assert (r['processes'], r['local_devices'], r['devices']) == (2, 4, 8)


def test_jax_environment_names_start_a_run_anywhere():
  """JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID (as orbax's multi-host
  launcher sets them) join processes outside any cluster JAX detects."""
  port = free_coordinator_port()

  def env_of(index):
    return dict(_no_cluster(os.environ), JAX_COORDINATOR_ADDRESS=f'127.0.0.1:{port}',
                JAX_NUM_PROCESSES='2', JAX_PROCESS_ID=str(index), JAX_PLATFORMS='cpu',
                XLA_FLAGS='--xla_force_host_platform_device_count=3')

  results = _start_two(env_of, ['Cluster: explicit settings', 'num_processes=2'])
  for r in results:
    assert (r['processes'], r['local_devices'], r['devices']) == (2, 3, 6)
