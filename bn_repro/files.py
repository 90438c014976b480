"""Small file helpers shared by the scripts and the library."""

from __future__ import annotations

import json
import os

from bn_repro import device_map


def write_json(path: str, value) -> None:
  """Writes `value` as indented JSON (process 0 only), creating the folder."""
  if device_map.process_index() != 0:
    return
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, 'w', encoding='utf-8') as f:
    json.dump(value, f, indent=1)
