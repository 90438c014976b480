"""Files on local disks and on cloud storage (gs://...), through one interface (etils.epath).

Everything bn_repro writes outside orbax checkpoints goes through here, so a
workdir on gs:// holds the same files as a local one. What the two kinds of
storage guarantee differs, and the functions here paper over it:
- a write is all-or-nothing: locally a temporary file renamed over the old
  one; on cloud storage an object upload, which is visible only when complete;
- appending: locally an append to the open file; on cloud storage, which has
  no append, the whole file rewritten;
- create-if-absent and replace-if-unchanged (the workdir's lock): on gs:// object
  generation preconditions (atomic, through google-cloud-storage); locally a
  hard link of a complete file, and a claim file that one replacer of a version
  gets.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import threading
import time

from etils import epath
from google.api_core import exceptions as gcs_exceptions
from google.cloud import storage as gcs

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


# Create-if-absent and replace-if-unchanged. A `version` names one content of a file:
# on gs:// the object's generation, elsewhere the text itself.

_gcs_client = None
# A claim to replace a file (replace_if_unchanged, locally) is held for milliseconds: one
# this old was left by a process that died holding it.
_ABANDONED_CLAIM_SECONDS = 30.0


def _gcs_blob(path: str):
  global _gcs_client
  if _gcs_client is None:
    _gcs_client = gcs.Client()
  bucket, _, name = path[len('gs://'):].partition('/')
  return _gcs_client.bucket(bucket).blob(name)


def _private_name(path: str, what: str) -> str:
  """A name beside `path` that no other process or thread uses."""
  return f'{path}.{what}{os.getpid()}-{threading.get_ident()}'


def _read_any_text(path: str) -> str:
  """The text of a local or non-gs remote file, bytes that are not UTF-8 replaced."""
  return read_bytes(path).decode('utf-8', 'replace')


def read_versioned(path) -> tuple:
  """(text, version) of `path`, bytes that are not UTF-8 replaced; FileNotFoundError if it
  does not exist."""
  path = os.fspath(path)
  if path.startswith('gs://'):
    blob = _gcs_blob(path)
    try:
      data = blob.download_as_bytes()
    except gcs_exceptions.NotFound as e:
      raise FileNotFoundError(path) from e
    return data.decode('utf-8', 'replace'), blob.generation   # the bytes read
  text = _read_any_text(path)
  return text, text


def create_exclusive(path, text: str):
  """Creates `path` holding `text` unless it exists: its version, or None if it existed.
  Of several processes creating one path at once exactly one succeeds (gs://: a create
  with ifGenerationMatch=0; locally a hard link; other cloud storage: a check and a write)."""
  path = os.fspath(path)
  if path.startswith('gs://'):
    blob = _gcs_blob(path)
    try:
      blob.upload_from_string(text.encode('utf-8'), if_generation_match=0)
    except gcs_exceptions.PreconditionFailed:
      return None
    return blob.generation
  if is_remote(path):
    if exists(path):
      return None
    write_text(path, text)
    return text
  # Written whole beside it, then linked in (fails if the name exists): no reader ever sees
  # a part of it. Where hard links are not supported, an O_EXCL create, then the write.
  temporary = _private_name(path, 'new')
  with open(temporary, 'w', encoding='utf-8') as f:
    f.write(text)
    f.flush()
    os.fsync(f.fileno())
  try:
    os.link(temporary, path)
    return text
  except FileExistsError:
    return None
  except OSError as e:
    if e.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP):
      raise
  finally:
    os.remove(temporary)
  try:
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
  except FileExistsError:
    return None
  with os.fdopen(fd, 'w', encoding='utf-8') as f:
    f.write(text)
  return text


def replace_if_unchanged(path, text: str, version):
  """Replaces `path` with `text` if it still holds `version`: the new version, or None if
  it changed (or vanished) since. Of several replacing one version at once at most one
  succeeds (gs://: ifGenerationMatch=<version>; locally only the one that creates a claim
  file named after the version checks and writes; the file is never absent meanwhile)."""
  path = os.fspath(path)
  if path.startswith('gs://'):
    blob = _gcs_blob(path)
    try:
      blob.upload_from_string(text.encode('utf-8'), if_generation_match=version)
    except (gcs_exceptions.PreconditionFailed, gcs_exceptions.NotFound):
      return None
    return blob.generation
  if is_remote(path):
    if not exists(path) or _read_any_text(path) != version:
      return None
    write_text(path, text)
    return text
  # One replacer per version: the one that creates its claim, which it removes when done.
  claim = f'{path}.takeover-{hashlib.blake2b(version.encode(), digest_size=8).hexdigest()}'
  if create_exclusive(claim, text) is None:
    with contextlib.suppress(FileNotFoundError):
      if time.time() - os.path.getmtime(claim) > _ABANDONED_CLAIM_SECONDS:
        remove(claim)     # its replacer died holding it
    return None
  try:
    return _write_if_it_holds(path, text, version)
  finally:
    remove(claim)


def rewrite_if_unchanged(path, text: str, version):
  """replace_if_unchanged for the owner of `path` rewriting it: the file is never absent
  meanwhile (locally a check, then a write renamed over it, so another process replacing
  it in between loses, and sees that the next time it looks)."""
  path = os.fspath(path)
  if is_remote(path):
    return replace_if_unchanged(path, text, version)
  return _write_if_it_holds(path, text, version)


def _write_if_it_holds(path: str, text: str, version):
  """Writes `text` to the local `path` if it holds `version` (a check, then a write): the new
  version, or None if it changed or vanished."""
  try:
    if _read_any_text(path) != version:
      return None
  except FileNotFoundError:
    return None
  write_text(path, text)
  return text


def remove_if_unchanged(path, version) -> bool:
  """Removes `path` if it still holds `version`; whether it did."""
  path = os.fspath(path)
  if path.startswith('gs://'):
    try:
      _gcs_blob(path).delete(if_generation_match=version)
    except (gcs_exceptions.PreconditionFailed, gcs_exceptions.NotFound):
      return False
    return True
  try:
    if _read_any_text(path) != version:
      return False
  except FileNotFoundError:
    return False
  remove(path)
  return True
