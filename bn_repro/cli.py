"""What every script shares: multi-process start-up, one-line errors, quiet libraries."""

from __future__ import annotations

import os
import sys

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import logging  # noqa: E402

from absl import app  # noqa: E402
from absl import logging as absl_logging  # noqa: E402

# jax logs at INFO which backends it could not find (TPU, GPU) on every start.
logging.getLogger('jax._src.xla_bridge').setLevel(logging.WARNING)


def _not_library_chatter(record: logging.LogRecord) -> bool:
  """Drops INFO lines of orbax and tfds (dozens per checkpoint / dataset)."""
  if record.levelno >= logging.WARNING:
    return True
  return not any(part in record.pathname for part in ('/orbax/', '/tensorflow_datasets/'))


logging.getLogger('absl').addFilter(_not_library_chatter)

from bn_repro.errors import Interrupted, UserError  # noqa: E402
from bn_repro.parallel import distributed  # noqa: E402


def start(main) -> None:
  """absl's app.run: joins the other processes of a multi-process run, then runs main.
  A UserError prints as one line (exit status 2); an Interrupted run logs why (status 0)."""

  def guarded(argv):
    try:
      distributed.initialize()
      return main(argv)
    except UserError as e:
      print(f'error: {e}', file=sys.stderr)
      sys.exit(2)
    except Interrupted as e:
      absl_logging.info('%s', e)
      sys.exit(0)

  app.run(guarded)
