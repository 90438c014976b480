"""Files on local disks and on cloud storage (gs://...), through one interface (etils.epath).

Everything bn_repro writes outside orbax checkpoints goes through here, so a
workdir on gs:// holds the same files as a local one. What the two kinds of
storage guarantee differs, and the functions here paper over it:
- a write is all-or-nothing: locally a temporary file renamed over the old
  one; on cloud storage an object upload, which is visible only when complete;
- appending: locally an append to the open file; on cloud storage, which has
  no append, the whole file rewritten.
"""

from __future__ import annotations

import os

from etils import epath

Path = epath.Path


def is_remote(path) -> bool:
  return '://' in os.fspath(path)


def absolute(path) -> str:
  """An absolute local path, or a remote URL unchanged (os.path.abspath mangles 'gs://b/x')."""
  path = os.fspath(path)
  return path if is_remote(path) else os.path.abspath(path)


def join(*parts) -> str:
  return os.fspath(Path(*parts)) if is_remote(parts[0]) else os.path.join(*parts)


def exists(path) -> bool:
  return Path(path).exists()


def is_dir(path) -> bool:
  return Path(path).is_dir()


def make_dirs(path) -> None:
  Path(path).mkdir(parents=True, exist_ok=True)


def read_text(path) -> str:
  return Path(path).read_text(encoding='utf-8')


def write_text(path, text: str) -> None:
  """Writes the whole file at once: readers see the old content or the new, never a part."""
  write_bytes(path, text.encode('utf-8'))


def read_bytes(path) -> bytes:
  return Path(path).read_bytes()


def write_bytes(path, data: bytes) -> None:
  """Writes the whole file at once: readers see the old content or the new, never a part."""
  path = os.fspath(path)
  if is_remote(path):
    Path(path).write_bytes(data)
    return
  temporary = f'{path}.tmp{os.getpid()}'
  with open(temporary, 'wb') as f:
    f.write(data)
    f.flush()
    os.fsync(f.fileno())
  os.replace(temporary, path)


def append_text(path, text: str) -> None:
  """Appends to a file, creating it; the text is in the file when this returns (it survives
  this process being killed)."""
  path = os.fspath(path)
  if is_remote(path):
    previous = read_text(path) if exists(path) else ''
    Path(path).write_text(previous + text, encoding='utf-8')
    return
  with open(path, 'a', encoding='utf-8') as f:
    f.write(text)
    f.flush()


def remove(path) -> None:
  Path(path).unlink(missing_ok=True)


def remove_tree(path) -> None:
  if exists(path):
    Path(path).rmtree()


def rename(source, target) -> None:
  """Moves a file or folder (on cloud storage: a copy, then a delete)."""
  Path(source).rename(target)


def list_names(path) -> list[str]:
  return sorted(p.name for p in Path(path).iterdir()) if exists(path) else []
