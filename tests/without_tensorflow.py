"""Runs a script as on a machine where TensorFlow, tfds, TensorBoard and clu are not
installed (the accelerator image's case).

  python tests/without_tensorflow.py SCRIPT [ARGS...]

The finders of installed packages stop seeing them: importing one raises
ModuleNotFoundError and importlib.util.find_spec returns None, as they would
there (libraries such as etils probe with find_spec). At exit the script's
process also checks that none of them was loaded by other means.
"""

import atexit
import importlib.machinery
import os
import runpy
import sys

BLOCKED = ('tensorflow', 'tensorflow_datasets', 'tensorboard', 'tf_keras', 'clu')


def _blocked(name: str) -> bool:
  return name.split('.')[0] in BLOCKED


class _PathFinderWithout:
  """importlib's PathFinder, blind to the BLOCKED packages."""

  @staticmethod
  def find_spec(name, path=None, target=None):
    if _blocked(name):
      return None
    return importlib.machinery.PathFinder.find_spec(name, path, target)

  @staticmethod
  def invalidate_caches():
    importlib.machinery.PathFinder.invalidate_caches()


def _check_nothing_loaded():
  loaded = sorted(m for m in sys.modules if _blocked(m))
  if loaded:
    print(f'without_tensorflow: loaded anyway: {loaded}', file=sys.stderr)
    os._exit(3)


if __name__ == '__main__':
  sys.meta_path[:] = [_PathFinderWithout if f is importlib.machinery.PathFinder else f
                      for f in sys.meta_path]
  atexit.register(_check_nothing_loaded)
  script = sys.argv[1]
  sys.argv = sys.argv[1:]
  sys.path.insert(0, os.path.dirname(os.path.abspath(script)))
  runpy.run_path(script, run_name='__main__')
