"""Checks that every requirement file installs from wheels on every machine it is meant for,
and rewrites the lock files (`make check-requirements`, `make lock`; both need PyPI).

  python scripts/check_requirements.py                 # resolve each file for each platform
  python scripts/check_requirements.py --write_locks   # rewrite requirements*.lock

Resolution is uv's (`uv pip compile --python-platform ... --only-binary :all:`): unlike
`pip download --platform`, it evaluates the environment markers (ours and those of every
transitive dependency) for the target machine, not for this one, and reads the wheels'
metadata without downloading them. One package may come as source: promise, pure Python,
which tensorflow-datasets needs and which has no wheel. Exit status 1 if any combination
fails, or resolves a directly pinned package to another version than its pin.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import re
import subprocess
import sys

from packaging.markers import Marker

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTHONS = ('3.11', '3.12', '3.13')
LINUX_X86 = 'x86_64-manylinux_2_31'     # glibc 2.31: Ubuntu 20.04 and newer, TPU VMs
LINUX_ARM = 'aarch64-manylinux_2_31'    # GH200 / DGX Spark nodes
MAC_ARM = 'aarch64-apple-darwin'        # Apple silicon laptops
PLATFORMS = {  # requirement file -> the machines it is for
    'requirements.txt': (LINUX_X86, LINUX_ARM, MAC_ARM),
    'requirements-test.txt': (LINUX_X86, LINUX_ARM, MAC_ARM),
    'requirements-cuda12.txt': (LINUX_X86, LINUX_ARM),
    'requirements-cuda13.txt': (LINUX_X86, LINUX_ARM),
    'requirements-tpu.txt': (LINUX_X86,),
}
# Marker variables of each platform, to read which of a file's pins apply there.
MARKER_ENV = {
    LINUX_X86: {'sys_platform': 'linux', 'platform_machine': 'x86_64'},
    LINUX_ARM: {'sys_platform': 'linux', 'platform_machine': 'aarch64'},
    MAC_ARM: {'sys_platform': 'darwin', 'platform_machine': 'arm64'},
}
BUILD_FROM_SOURCE = ('promise',)
_PIN = re.compile(r'^([A-Za-z0-9_.-]+)(\[[^\]]*\])?==([^\s;]+)\s*(?:;\s*(.*))?$')


def canonical_name(name: str) -> str:
  return re.sub(r'[-_.]+', '-', name).lower()


def direct_pins(path: str) -> list[tuple[str, str, str]]:
  """(name, version, marker or '') of every `name==version` line, following `-r` includes."""
  pins = []
  for raw in open(os.path.join(REPO, path), encoding='utf-8'):
    line = raw.split('#')[0].strip()
    if line.startswith('-r '):
      pins += direct_pins(line[3:].strip())
    elif (match := _PIN.match(line)):
      pins.append((canonical_name(match.group(1)), match.group(3), (match.group(4) or '').strip()))
  return pins


def applies(marker: str, platform: str, python: str) -> bool:
  """Whether a pin's marker holds on `platform` with Python `python` (packaging's rules)."""
  if not marker:
    return True
  env = dict(MARKER_ENV[platform], python_version=python, python_full_version=python + '.0')
  return Marker(marker).evaluate(env)


def _uv(*args: str) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, '-m', 'uv', *args], capture_output=True, text=True,
                        cwd=REPO)


def _source_flags() -> list[str]:
  flags = ['--only-binary', ':all:']
  for name in BUILD_FROM_SOURCE:
    flags += ['--no-binary', name]
  return flags


def resolve(path: str, platform: str, python: str) -> tuple[dict[str, str] | None, str]:
  """{package: version} uv resolves `path` to on `platform` and `python`, or (None, why)."""
  out = _uv('pip', 'compile', '--quiet', '--no-header', '--no-annotate', '--python-platform',
            platform, '--python-version', python, *_source_flags(), path)
  if out.returncode:
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    return None, ' '.join(lines[-3:])
  resolved = {}
  for line in out.stdout.splitlines():
    if (match := _PIN.match(line.strip())):
      resolved[canonical_name(match.group(1))] = match.group(3)
  return resolved, ''


def _check_one(path: str, platform: str, python: str) -> str:
  """'ok ...' or 'FAIL ...': one file on one platform and Python."""
  resolved, why = resolve(path, platform, python)
  where = f'{path} {platform} Python {python}'
  if resolved is None:
    return f'FAIL {where}: {why}'
  wrong = [f'{name} {resolved.get(name, "absent")} (pinned {version})'
           for name, version, marker in direct_pins(path)
           if applies(marker, platform, python) and resolved.get(name) != version]
  if wrong:
    return f'FAIL {where}: {", ".join(wrong)}'
  shown = ', '.join(f'{n} {resolved[n]}' for n in ('jax', 'tensorflow', 'tensorflow-cpu', 'libtpu')
                    if n in resolved)
  return f'ok   {where}: {len(resolved)} packages ({shown})'


def check() -> int:
  combinations = [(path, platform, python) for path, platforms in PLATFORMS.items()
                  for platform in platforms for python in PYTHONS]
  # Resolving is mostly waiting for the index: several at once.
  with concurrent.futures.ThreadPoolExecutor(8) as pool:
    lines = list(pool.map(lambda c: _check_one(*c), combinations))
  for line in lines:
    print(line)
  failures = sum(line.startswith('FAIL') for line in lines)
  print(f'{failures} of {len(lines)} combinations failed' if failures else
        f'all {len(lines)} combinations resolve')
  return 1 if failures else 0


def lock_file(path: str) -> str:
  return path[:-len('.txt')] + '.lock'


def write_locks() -> int:
  """Each requirement file's lock: every transitive package pinned with its hashes, for
  every platform and Python at once (uv's universal resolution, with markers)."""
  for path in PLATFORMS:
    out = _uv('pip', 'compile', '--quiet', '--universal', '--python-version', PYTHONS[0],
              '--generate-hashes', '--no-annotate', '--custom-compile-command', 'make lock',
              *_source_flags(), path, '-o', lock_file(path))
    if out.returncode:
      print(f'FAIL {path}: {out.stderr.strip()}')
      return 1
    print(f'wrote {lock_file(path)}')
  return 0


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--write_locks', action='store_true',
                      help='rewrite the .lock of every requirement file instead of checking')
  args = parser.parse_args()
  return write_locks() if args.write_locks else check()


if __name__ == '__main__':
  sys.exit(main())
