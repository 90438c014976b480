"""What a config trains: its identity, apart from how a run of it is watched and fed.

A workdir holds one run, so a resumed run must have the same identity; the
recipe (model, optimizer, steps) depends on nothing else, so it is built
once per identity in a process.
"""

from __future__ import annotations

import json

# Fields a resumed run may change: how long and how it is watched, where the data
# lives, how the input is fed. Every other field defines what is trained.
OPERATIONAL_FIELDS = ('name', 'train_for', 'log_every', 'check_finite_every', 'eval_batch_size',
                      'hooks', 'data.data_dir', 'data.manual_dir', 'data.local_dir',
                      'data.download', 'data.prefetch', 'data.cache_eval', 'data.in_memory',
                      'data.eval_split', 'data.num_eval_examples')


# Fields added after runs were saved without them, with the value those runs had.
ADDED_FIELDS = {'data.source': 'tfds'}


def _flatten(tree, prefix=''):
  out = {}
  for key, value in tree.items():
    name = f'{prefix}{key}'
    if isinstance(value, dict):
      out.update(_flatten(value, name + '.'))
    else:
      out[name] = list(value) if isinstance(value, tuple) else value
  return out


def _operational(name: str) -> bool:
  return any(name == f or name.startswith(f + '.') for f in OPERATIONAL_FIELDS)


def identity(config) -> dict:
  """{dotted field: value} of every field outside OPERATIONAL_FIELDS."""
  flat = {**ADDED_FIELDS, **_flatten(json.loads(config.to_json_best_effort()))}
  return {name: value for name, value in flat.items() if not _operational(name)}


def identity_key(config) -> str:
  return json.dumps(identity(config), sort_keys=True)


def identity_difference(saved, config) -> str | None:
  """The first field, outside OPERATIONAL_FIELDS, where two configs differ, in words."""
  old, new = identity(saved), identity(config)
  for name in sorted(set(old) | set(new)):
    if old.get(name, '<absent>') != new.get(name, '<absent>'):
      return f'{name}: {old.get(name, "<absent>")!r} there, {new.get(name, "<absent>")!r} now'
  return None
