"""The machine a process runs on, as results record it: XLA's CPU numerics and the input
pipeline's per-core speed both depend on the CPU, so benchmarks and training runs name it."""

from __future__ import annotations

import platform


def cpu_model(cpuinfo: str = '/proc/cpuinfo') -> str:
  """The CPU's model as Linux names it, with its family/model numbers (which tell
  generations apart where the name does not, e.g. 'AMD EPYC'); on ARM, which names no
  model, the implementer and part numbers; else platform's guess."""
  fields = {}
  try:
    with open(cpuinfo, encoding='utf-8') as f:
      for line in f:
        key, _, value = line.partition(':')
        if not key.strip():
          break   # the first processor's block is enough
        fields.setdefault(key.strip(), value.strip())
  except OSError:
    return platform.processor() or platform.machine()
  if 'model name' in fields:
    name = fields['model name']
    if 'cpu family' in fields and 'model' in fields:
      name += f' (family {fields["cpu family"]}, model {fields["model"]})'
    return name
  if 'CPU implementer' in fields and 'CPU part' in fields:
    return (f'{platform.machine()} (implementer {fields["CPU implementer"]}, '
            f'part {fields["CPU part"]})')
  return platform.processor() or platform.machine()
