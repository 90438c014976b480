"""What every script shares: multi-process start-up, one-line errors, quiet libraries.

A mistake the user can fix (a bad flag or config, a missing file, a full or
read-only disk, a workdir in use) ends the script with one line on stderr,
`error: ...`, and exit status 2; `--verbose` shows the traceback too. A run
stopped by SIGTERM after saving exits 0, by Ctrl-C (SIGINT) 130. However a script
ends, its process ends: a library thread that would keep it alive is cut off after
EXIT_GRACE_SECONDS.

`--help` (or -h; --helpfull for every flag) lists the script's flags and the shared ones
below, and exits 0 before the script imports TensorFlow and JAX: each script calls
answer_help() after defining its flags, then imports the rest.
"""

from __future__ import annotations

import errno
import importlib
import os
import sys
import threading
import traceback

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import logging  # noqa: E402

from absl import app, flags  # noqa: E402
from absl import logging as absl_logging  # noqa: E402

# jax logs at INFO which backends it could not find (TPU, GPU) on every start.
logging.getLogger('jax._src.xla_bridge').setLevel(logging.WARNING)


_CHATTY = ('/orbax/', '/tensorflow_datasets/')
# Libraries whose background threads log the tracebacks of a failed write before the
# failure reaches the code that waits for it, which then reports it in one line.
_REPORTED_BY_US = ('/orbax/', '/asyncio/')


def _not_library_chatter(record: logging.LogRecord) -> bool:
  """Drops INFO lines of orbax and tfds (dozens per checkpoint / dataset), and the error
  logs of orbax's background writes (unless --verbose): their failure is reported once."""
  if record.levelno >= logging.ERROR and any(p in record.pathname for p in _REPORTED_BY_US):
    return flags.FLAGS.is_parsed() and flags.FLAGS.verbose
  if record.levelno >= logging.WARNING:
    return True
  return not any(part in record.pathname for part in _CHATTY)


for _logger in ('absl', 'asyncio'):
  logging.getLogger(_logger).addFilter(_not_library_chatter)

from bn_repro.errors import Interrupted, UserError  # noqa: E402

flags.DEFINE_bool('verbose', False, 'Show the traceback of errors, not only their one line.')
# Start-up (parallel/distributed.py reads none of these; start() passes their values).
flags.DEFINE_string('coordinator_address', None,
                    'host:port of process 0, for multi-process runs outside Slurm / Cloud TPU.')
flags.DEFINE_integer('num_processes', None, 'Number of processes of a multi-process run.')
flags.DEFINE_integer('process_id', None, 'This process\'s index in a multi-process run.')
flags.DEFINE_bool('allow_cpu', False,
                  'Run on the CPU although this machine has a GPU or TPU (JAX found none: '
                  'without this flag that is an error naming the install command).')
flags.DEFINE_string('compilation_cache_dir', '~/.cache/bn_repro/jax',
                    'JAX\'s persistent compilation cache: compiled programs are reused by the '
                    'next run of the same model (a gs:// path works on TPU VMs).')
flags.DEFINE_bool('compilation_cache', True, 'Use the compilation cache.')


def define_allow_config_change() -> None:
  """The --allow_config_change flag of every script that trains into a workdir."""
  flags.DEFINE_bool('allow_config_change', False,
                    'Continue a workdir whose config trains something else (a changed model, '
                    'optimizer, data or seed); the old config goes to its config history.')


# evaluation.evaluators.STATISTICS (tests/test_help.py checks), here for the --statistics flags:
# importing evaluators loads JAX and TensorFlow, which --help does without.
EVAL_STATISTICS = ('ema', 'ema_debiased', 'population')
_SHORT_HELP = {'-h', '-?', '--?', '-help', '--help', '-helpshort', '--helpshort'}
_FULL_HELP = {'-helpfull', '--helpfull'}


def _list_shared_flags_in_help() -> None:
  """Makes the flags defined here key flags of the script, so that --help lists them with
  its own (absl lists only a script's own flags, and the rest under --helpfull)."""
  for flag in flags.FLAGS.get_flags_for_module(__name__):
    flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)


def answer_help(argv: list[str] | None = None) -> None:
  """If the command line asks for help, prints it and exits 0. A script calls this after
  defining its flags and before its other imports, which take seconds (TensorFlow, JAX)."""
  argv = sys.argv if argv is None else argv
  args = set(argv[1:argv.index('--')] if '--' in argv else argv[1:])
  if not args & (_SHORT_HELP | _FULL_HELP):
    return
  app.define_help_flags()        # --helpfull lists them, as absl's own help does
  _list_shared_flags_in_help()
  full = bool(args & _FULL_HELP)
  app.usage(shorthelp=not full, writeto_stdout=True)
  if not full:
    print('\nTry --helpfull to get a list of all flags.')
  _exit(0)


def _distributed():
  """bn_repro.parallel.distributed, imported when a script starts rather than with this
  module: it imports JAX (seconds), and answer_help() runs first. The package's one import
  inside a function, by importlib (tests/test_structure.py forbids import statements there)."""
  return importlib.import_module('bn_repro.parallel.distributed')

EXIT_USER_ERROR = 2
EXIT_SIGINT = 130
# OS errors that are the machine's state, not a bug: one line is enough.
_USER_OS_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EROFS, errno.EFBIG,
                   errno.ENOENT, errno.EISDIR, errno.ENOTDIR, errno.EPERM}


def _first_line(error: BaseException) -> str:
  """The innermost cause's message, on one line."""
  while error.__cause__ is not None or error.__context__ is not None:
    error = error.__cause__ or error.__context__
  text = str(error).strip().splitlines()
  return text[-1].strip() if text else type(error).__name__


# How long an ending script may take to shut down before it is ended outright: a library's
# leftover non-daemon thread (orbax, gloo) must not keep a failed script alive.
EXIT_GRACE_SECONDS = 20.0


def _exit(status: int) -> None:
  """sys.exit(status), and os._exit(status) if the interpreter has not ended in time."""
  sys.stdout.flush()
  sys.stderr.flush()
  timer = threading.Timer(EXIT_GRACE_SECONDS, os._exit, args=(status,))
  timer.daemon = True
  timer.start()
  sys.exit(status)


def _fail(message: str) -> None:
  print(f'error: {message}', file=sys.stderr)
  _exit(EXIT_USER_ERROR)


def _parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, plus loading every config flag now, as one-line errors."""
  try:
    remaining = flags.FLAGS(argv)
  except flags.Error as e:
    _fail(f'{e}')
  except (AttributeError, KeyError) as e:   # an override of a field the config lacks
    _fail(f'a --config.* override names a field the config does not have: {_first_line(e)}')
  except Exception as e:  # config_flags raises whatever loading the file raised
    _fail(f'the config file could not be loaded: {_first_line(e)}')
  for name in list(flags.FLAGS):
    flag = flags.FLAGS[name]
    if type(flag).__name__ == '_ConfigFlag':   # an ml_collections config file flag
      try:
        if flag.value is not None:
          flag.value.keys()  # a config that failed to load raises here (not at parsing)
      except Exception as e:
        _fail(f'--{name}: {_first_line(e)}')
  if len(remaining) > 1:
    _fail(f'unexpected arguments {remaining[1:]}: every option is a --flag')
  return remaining


def start(main) -> None:
  """absl's app.run with the error handling above: joins the other processes of a
  multi-process run, then runs main(argv)."""
  _list_shared_flags_in_help()
  distributed = _distributed()

  def guarded(argv):
    try:
      f = flags.FLAGS
      distributed.initialize(f.coordinator_address, f.num_processes, f.process_id)
      distributed.enable_compilation_cache(
          f.compilation_cache_dir if f.compilation_cache else None,
          is_default=f['compilation_cache_dir'].using_default_value)
      distributed.check_backend(f.allow_cpu)
      return main(argv)
    except Interrupted as e:
      absl_logging.warning('%s', e)
      if getattr(e, 'signal_name', '') == 'SIGINT':
        _exit(EXIT_SIGINT)
      distributed.requeue_if_asked()
      _exit(0)
    except KeyboardInterrupt:
      print('interrupted (Ctrl-C)', file=sys.stderr)
      _exit(EXIT_SIGINT)
    except UserError as e:
      if flags.FLAGS.verbose:
        raise
      _fail(str(e))
    except OSError as e:
      if flags.FLAGS.verbose or e.errno not in _USER_OS_ERRORS:
        raise
      where = f' ({e.filename})' if e.filename else ''
      _fail(f'{e.strerror or e}{where}; run again with --verbose for the traceback')

  def ending_the_process(argv):
    try:
      return guarded(argv)
    except SystemExit:
      raise
    except BaseException:   # a bug (or --verbose): its traceback, then the process ends
      traceback.print_exc()
      _exit(1)

  app.run(ending_the_process, flags_parser=_parse_flags)
