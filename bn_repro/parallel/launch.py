"""Starts P processes of one run on this machine (127.0.0.1), for testing multi-host code.

Each process gets the coordinator address, the process count and its index
through BN_REPRO_* environment variables (read by bn_repro.parallel.distributed), and
optionally its own number of simulated CPU devices. Output lines are prefixed
with the process index. If one process fails, the others are killed at once;
past the timeout, all are. SIGINT and SIGTERM sent to the launcher are passed
on to every process (which then save and stop), and no process outlives the
launcher: each is killed if the launcher dies, however it dies.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import threading
import time

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
  """In the child, before exec: the kernel sends SIGKILL when the launcher dies (Linux)."""
  try:
    ctypes.CDLL('libc.so.6', use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
  except OSError:
    pass


def free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _pump(stream, prefix, sink, lines):
  for line in stream:
    lines.append(line)
    sink.write(f'{prefix}{line}')
    sink.flush()


def launch_local(command: list[str], num_processes: int, *, cpu_devices_per_process: int | None = None,
                 timeout: float = 600, env: dict | None = None, sink=sys.stdout) -> tuple[int, list[list[str]]]:
  """Runs `command` as num_processes cooperating processes.

  Returns (exit status, output lines of each process): 0 when all succeed,
  the first failure's status otherwise, 124 on timeout.
  """
  if num_processes < 1:
    raise ValueError(f'num_processes={num_processes} must be at least 1')
  port = free_port()
  procs, outputs, pumps = [], [], []
  forwarded = []      # the signals received, in order
  delivered = set()   # (pid, signal) already passed on

  def pass_on():
    for number in forwarded:
      for proc in procs:
        if (proc.pid, number) not in delivered and proc.poll() is None:
          os.killpg(proc.pid, number)
          delivered.add((proc.pid, number))

  def forward(number, _):
    forwarded.append(number)
    pass_on()

  # Before the workers start: a signal while they start must reach them, not kill the
  # launcher.
  previous = {}
  if threading.current_thread() is threading.main_thread():
    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
  status = None
  deadline = time.time() + timeout
  try:
    for index in range(num_processes):
      if forwarded:
        break   # a signal arrived while starting: start no more
      process_env = dict(os.environ if env is None else env)
      process_env.update(BN_REPRO_COORDINATOR_ADDRESS=f'127.0.0.1:{port}',
                         BN_REPRO_NUM_PROCESSES=str(num_processes),
                         BN_REPRO_PROCESS_ID=str(index), PYTHONUNBUFFERED='1')
      if cpu_devices_per_process:
        flags = process_env.get('XLA_FLAGS', '').split()
        flags = [f for f in flags if not f.startswith('--xla_force_host_platform_device_count')]
        flags.append(f'--xla_force_host_platform_device_count={cpu_devices_per_process}')
        process_env['XLA_FLAGS'] = ' '.join(flags)
        process_env['JAX_PLATFORMS'] = 'cpu'
      proc = subprocess.Popen(command, env=process_env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, start_new_session=True,
                              preexec_fn=_die_with_parent)
      procs.append(proc)
      pass_on()   # a signal that came while it started
      lines = []
      pump = threading.Thread(target=_pump, args=(proc.stdout, f'[p{index}] ', sink, lines),
                              daemon=True)
      pump.start()
      outputs.append(lines)
      pumps.append(pump)

    while status is None:
      codes = [p.poll() for p in procs]
      failed = [c for c in codes if c not in (None, 0)]
      if failed and not forwarded:
        status = failed[0]
      elif all(c is not None for c in codes):
        status = next((c for c in codes if c), 0)
      elif time.time() > deadline:
        status = 124
      else:
        time.sleep(0.2)
  finally:
    for s, handler in previous.items():
      signal.signal(s, handler)
    for proc in procs:
      if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
      proc.wait()
    for pump in pumps:
      pump.join(timeout=5)
  return status, outputs
