"""What every script shares: one-line errors for user mistakes, quiet TensorFlow."""

from __future__ import annotations

import os
import sys

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import logging  # noqa: E402

from absl import app  # noqa: E402

# jax logs at INFO which backends it could not find (TPU, GPU) on every start.
logging.getLogger('jax._src.xla_bridge').setLevel(logging.WARNING)


def _not_library_chatter(record: logging.LogRecord) -> bool:
  """Drops INFO lines of orbax and tfds (dozens per checkpoint / dataset), and
  orbax's warning about the array handler bn_repro.checkpointing sets on purpose."""
  if '/orbax/' in record.pathname and 'overriding jax.Array' in record.getMessage():
    return False
  if record.levelno >= logging.WARNING:
    return True
  return not any(part in record.pathname for part in ('/orbax/', '/tensorflow_datasets/'))


logging.getLogger('absl').addFilter(_not_library_chatter)

from bn_repro import distributed  # noqa: E402
from bn_repro.errors import UserError  # noqa: E402


def run(main) -> None:
  """absl's app.run: joins the other processes of a multi-process run, then
  runs main, printing a UserError as one line and exiting with status 2."""

  def guarded(argv):
    try:
      distributed.initialize()
      return main(argv)
    except UserError as e:
      print(f'error: {e}', file=sys.stderr)
      sys.exit(2)

  app.run(guarded)
