"""Reproduces the paper's claims at small scale on Fashion-MNIST (or MNIST) and writes results/.

  python scripts/reproduce.py --quick      # every piece at toy length
  python scripts/reproduce.py              # the full mode (README: its wall time)
  python scripts/reproduce.py --parts same_code,controls,stable_rate,seeds,converged
                                           # issue 22's parts, into results/controls/

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
  parser.add_argument('--parts', default=None,
                      help='train these parts of bn_repro/research/parts.py instead of the '
                           'main plan (comma-separated, run in priority order: same_code, '
                           'controls, stable_rate, seeds, converged; or all); results in '
                           'results/controls (quick: results/controls_quick)')
  parser.add_argument('--seeds', default=None,
                      help='with --parts: train only these seeds this time (e.g. 0)')
  parser.add_argument('--reference', default=None,
                      help='with --parts: the main plan\'s results folder that the same-code '
                           'check and the corrections read (default results/full)')
  parser.add_argument('--allow_mixed_code', action='store_true',
                      help='make tables that pool runs of different code identity (flagged) '
                           'instead of refusing them')
  args = parser.parse_args()
  # After --help: the reproduction loads TensorFlow and JAX.
  from bn_repro.research import parts, plan_runner  # noqa: PLC0415
  if args.parts is None:
    if args.seeds or args.reference:
      parser.error('--seeds and --reference go with --parts')
    plan_runner.reproduce(REPO, quick=args.quick, out=args.out, dataset=args.dataset,
                          data_dir=args.data_dir, tables_only=args.tables_only,
                          allow_mixed_code=args.allow_mixed_code)
    return
  seeds = tuple(int(s) for s in args.seeds.split(',')) if args.seeds else None
  plan_runner.reproduce_parts(REPO, parts.parse_parts(args.parts), quick=args.quick,
                              out=args.out, dataset=args.dataset, data_dir=args.data_dir,
                              tables_only=args.tables_only, seeds=seeds,
                              reference=args.reference, allow_mixed_code=args.allow_mixed_code)


if __name__ == '__main__':
  main()
