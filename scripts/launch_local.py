"""Runs a command as P cooperating processes on this machine (for testing multi-host runs).

  python scripts/launch_local.py --num_processes 2 --cpu_devices_per_process 4 -- \\
      python scripts/train.py --config configs/tiny.py --workdir /tmp/run
"""

import argparse
import sys

from bn_repro.parallel.launch import launch_local


def main():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--num_processes', type=int, default=2)
  parser.add_argument('--cpu_devices_per_process', type=int, default=None,
                      help='simulate this many CPU devices in each process')
  parser.add_argument('--timeout', type=float, default=3600, help='seconds before all are killed')
  parser.add_argument('command', nargs=argparse.REMAINDER)
  args = parser.parse_args()
  command = args.command[1:] if args.command[:1] == ['--'] else args.command
  if not command:
    parser.error('give the command to run after --')
  if args.num_processes < 1:
    parser.error(f'--num_processes {args.num_processes}: it must be at least 1')
  if command[0] == 'python':
    command[0] = sys.executable
  status, _ = launch_local(command, args.num_processes,
                           cpu_devices_per_process=args.cpu_devices_per_process,
                           timeout=args.timeout)
  sys.exit(status)


if __name__ == '__main__':
  main()
