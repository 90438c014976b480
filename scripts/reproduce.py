"""Reproduces the paper's claims at small scale on Fashion-MNIST (or MNIST) and writes results/.

  python scripts/reproduce.py --quick      # every piece at toy length
  python scripts/reproduce.py              # the full mode (README: its wall time)

Every step is a command line of the project's own scripts, run in a
subprocess and listed in <out>/commands.md; re-running skips finished runs
and resumes interrupted ones, and `--tables_only` rewrites the tables and plots
from the runs finished so far. Outputs: plots (PNG), tables (Markdown and
JSON), the machine, the wall time and the git commit. The reproduction itself
is bn_repro/research/plan_runner.py.
"""

import argparse
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def main():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--quick', action='store_true', help='the short mode')
  parser.add_argument('--out', default=None,
                      help='results folder (default results/quick or results/full)')
  parser.add_argument('--dataset', default=None, choices=['fashion_mnist', 'mnist'],
                      help='default: MNIST when it is prepared or its files are given, '
                           'else Fashion-MNIST')
  parser.add_argument('--data_dir', default=None, help='tfds data_dir')
  parser.add_argument('--tables_only', action='store_true',
                      help='run nothing: tables and plots from the runs finished so far')
  args = parser.parse_args()
  from bn_repro.research import plan_runner  # after --help: it loads TensorFlow and JAX
  plan_runner.reproduce(REPO, quick=args.quick, out=args.out, dataset=args.dataset,
                        data_dir=args.data_dir, tables_only=args.tables_only)


if __name__ == '__main__':
  main()
