"""(7) Where a train step's time goes: a jax.profiler trace of a few steps, summarized.

The trace's device ops (a GPU's 'XLA Ops', or the CPU's thunks) are named by
the instructions of the compiled program. Each instruction gets one category
from the optimized HLO text: what it computes (for a fusion, everything it
fuses) and where in our code its ops were written (the stack frames XLA keeps
in each op's metadata). Categories, first match wins:

  collectives       all-reduce, all-gather, ... (BN statistics and gradients over devices)
  convolutions      convolution, cuDNN/cuBLAS calls, dot (the classifier)
  optimizer         ops from optax, other than its losses
  BN statistics     ops from models/batchnorm.py that reduce (means, variances, their gradients)
  BN normalization  the rest of models/batchnorm.py (normalize, scale, shift, EMA update)
  augmentation      data/on_device.py (the flip and the photometric distortions)
  pooling           reduce-window, select-and-scatter (pools and their gradients)
  concatenations    concatenate, and slices (a concatenation's gradient)
  layout copies     transpose, copy (layout changes between ops)
  other             everything else (activations, the loss, the input standardization)

The summary is written as text next to the trace (profile_summary.txt), with
each category's time per step and share of the traced op time.
"""

from __future__ import annotations

import collections
import glob
import os
import re
import warnings

import jax

from bn_repro.benchmarks import steps

CATEGORIES = ('collectives', 'convolutions', 'optimizer', 'BN statistics', 'BN normalization',
              'augmentation', 'pooling', 'concatenations', 'layout copies', 'other')
COLLECTIVES = ('all-reduce', 'all-gather', 'reduce-scatter', 'collective-permute', 'all-to-all',
               'collective-broadcast')
LAYOUT = {'transpose', 'copy', 'copy-start', 'copy-done', 'bitcast', 'reshape'}
BOOKKEEPING = {'parameter', 'constant', 'tuple', 'get-tuple-element', 'bitcast', 'broadcast',
               'iota'}

_COMPUTATION = re.compile(r'^(?:ENTRY )?%?([\w.\-]+) \(.*\{$')
_INSTRUCTION = re.compile(r'^\s*(?:ROOT )?%?([\w.\-]+) = (.*)$')
_OPCODE = re.compile(r'\s([a-z][a-z0-9\-]*)\(')
_CALLS = re.compile(r'(?:calls|to_apply|body|condition|branch_computations)=\{?%?([\w.\-]+)')
_TARGET = re.compile(r'custom_call_target="([^"]*)"')
_SOURCE_FILE = re.compile(r'source_file="([^"]*)"')
_FRAME = re.compile(r'stack_frame_id=(\d+)')
_MODULE = re.compile(r'^HloModule ([\w.\-]+)')


class _Instruction:

  def __init__(self, opcode, calls, target, files):
    self.opcode, self.calls, self.target, self.files = opcode, calls, target, files


def _stack_files(text: str) -> dict[int, tuple[str, ...]]:
  """stack_frame_id -> the files of that frame and of its callers, from the frame tables
  that precede the computations in the module's text (newer XLA; older XLA writes
  source_file= into each op's metadata instead)."""
  tables = collections.defaultdict(dict)
  section = None
  for line in text.splitlines():
    if line.startswith(('%', 'ENTRY')):
      break
    if line in ('FileNames', 'FunctionNames', 'FileLocations', 'StackFrames'):
      section = line
    elif section and line.strip():
      number, _, rest = line.partition(' ')
      tables[section][int(number)] = rest
  names = {k: v.strip('"') for k, v in tables['FileNames'].items()}
  location_file = {k: int(re.search(r'file_name_id=(\d+)', v).group(1))
                   for k, v in tables['FileLocations'].items()}
  frames = {k: (int(re.search(r'file_location_id=(\d+)', v).group(1)),
                int(re.search(r'parent_frame_id=(\d+)', v).group(1)))
            for k, v in tables['StackFrames'].items()}
  files = {}
  for frame in frames:
    chain, current = [], frame
    while current in frames and len(chain) <= len(frames):
      location, parent = frames[current]
      chain.append(names.get(location_file.get(location), ''))
      current = parent if parent != current else None
    files[frame] = tuple(chain)
  return files


def parse_hlo(text: str) -> tuple[str, dict[str, dict[str, _Instruction]]]:
  """(module name, {computation: {instruction name: _Instruction}}) of an HLO module's text."""
  frame_files = _stack_files(text)
  module = _MODULE.match(text)
  computations, current = {}, None
  for line in text.splitlines():
    header = _COMPUTATION.match(line)
    if header:
      current = computations.setdefault(header.group(1), {})
      continue
    if line.strip() == '}':
      current = None
      continue
    match = _INSTRUCTION.match(line) if current is not None else None
    if not match:
      continue
    name, rest = match.groups()
    opcode = _OPCODE.search(' ' + rest)
    frame = _FRAME.search(rest)
    files = frame_files.get(int(frame.group(1)), ()) if frame else ()
    files += tuple(_SOURCE_FILE.findall(rest))
    target = _TARGET.search(rest)
    current[name] = _Instruction(opcode.group(1) if opcode else '', _CALLS.findall(rest),
                                 target.group(1) if target else '', files)
  return (module.group(1) if module else ''), computations


def _category(instructions: list[_Instruction]) -> str:
  """The category of an instruction, given it and everything it calls."""
  opcodes = {i.opcode for i in instructions}
  files = [f for i in instructions for f in i.files]
  if any(op.startswith(COLLECTIVES) for op in opcodes):
    return 'collectives'
  if ({'convolution', 'dot'} & opcodes
      or any(re.search(r'conv|cublas|gemm|matmul', i.target, re.I) for i in instructions)):
    return 'convolutions'
  if any('optax' in f and '/losses/' not in f for f in files):
    return 'optimizer'
  if any(f.endswith('batchnorm.py') for f in files):
    return 'BN statistics' if 'reduce' in opcodes else 'BN normalization'
  if any(f.endswith('on_device.py') for f in files):
    return 'augmentation'
  if {'reduce-window', 'select-and-scatter'} & opcodes:
    return 'pooling'
  if {'concatenate', 'slice'} & opcodes:
    return 'concatenations'
  if opcodes - BOOKKEEPING and opcodes - BOOKKEEPING <= LAYOUT:
    return 'layout copies'
  return 'other'


def categories(hlo_text: str) -> dict[str, str]:
  """{instruction name: category} for every instruction of the module."""
  _, computations = parse_hlo(hlo_text)

  def closure(instruction, seen):
    found = [instruction]
    for called in instruction.calls:
      if called not in seen and called in computations:
        seen.add(called)
        for inner in computations[called].values():
          found += closure(inner, seen)
    return found

  return {name: _category(closure(instruction, set()))
          for body in computations.values() for name, instruction in body.items()}


def op_times(profile_data) -> dict[str, dict[str, float]]:
  """{module: {HLO op name: seconds}} summed over the traced device ops ('' where the trace
  does not name the module). A device plane's 'XLA Ops' line when it has one (a GPU's),
  else every event that names its HLO op (the CPU's thunks)."""
  times = collections.defaultdict(lambda: collections.defaultdict(float))
  with warnings.catch_warnings():
    # jaxlib builds the stats' type on first use and warns that it has no __module__ (its
    # own DeprecationWarning, raised here; as an error it aborts the process).
    warnings.simplefilter('ignore', DeprecationWarning)
    for plane in profile_data.planes:
      _add_op_times(plane, times)
  return {module: dict(ops) for module, ops in times.items()}


def _add_op_times(plane, times):
  lines = list(plane.lines)
  xla_ops = [line for line in lines if line.name == 'XLA Ops']
  for line in (xla_ops or lines):
    for event in line.events:
      stats = dict(event.stats)
      name = stats.get('hlo_op') or (event.name if xla_ops else None)
      if name:
        times[str(stats.get('hlo_module', ''))][str(name)] += event.duration_ns * 1e-9


def step_op_times(times: dict[str, dict[str, float]], module: str) -> tuple[dict, list[str]]:
  """The ops of the modules the trace names like `module` (a trace may decorate the name),
  else of every module (only the step runs while tracing); and which modules those were."""
  chosen = [m for m in times if m and (m == module or module in m or m in module)]
  chosen = chosen or list(times)
  merged = collections.defaultdict(float)
  for m in chosen:
    for op, seconds in times[m].items():
      merged[op] += seconds
  return dict(merged), chosen


def summarize(times: dict[str, float], by_op: dict[str, str], num_steps: int) -> dict:
  """Seconds per step and share of each category; ops the HLO does not name count as other."""
  totals = dict.fromkeys(CATEGORIES, 0.0)
  for op, seconds in times.items():
    totals[by_op.get(op, 'other')] += seconds
  total = sum(totals.values())
  top = sorted(times.items(), key=lambda kv: -kv[1])[:15]
  return {'traced_op_seconds_per_step': total / num_steps,
          'categories': {c: {'ms_per_step': 1000 * s / num_steps,
                             'share': s / total if total else 0.0}
                         for c, s in totals.items()},
          'top_ops': [{'op': op, 'category': by_op.get(op, 'other'),
                       'ms_per_step': 1000 * s / num_steps} for op, s in top],
          'unnamed_ops': sorted(op for op in times if op not in by_op)[:20]}


def summary_text(summary: dict, title: str) -> str:
  lines = [title, '',
           f'traced op time per step: {1000 * summary["traced_op_seconds_per_step"]:.2f} ms '
           '(summed over devices and parallel threads)', '',
           f'{"category":<18} {"ms/step":>9} {"share":>7}']
  for name, c in sorted(summary['categories'].items(), key=lambda kv: -kv[1]['ms_per_step']):
    lines.append(f'{name:<18} {c["ms_per_step"]:>9.3f} {100 * c["share"]:>6.1f}%')
  lines += ['', 'largest ops:']
  lines += [f'  {o["ms_per_step"]:>9.3f} ms  {o["category"]:<18} {o["op"]}'
            for o in summary['top_ops']]
  return '\n'.join(lines) + '\n'


def _latest_xplane(log_dir: str) -> str:
  found = glob.glob(os.path.join(log_dir, '**', '*.xplane.pb'), recursive=True)
  if not found:
    raise RuntimeError(f'jax.profiler wrote no .xplane.pb under {log_dir}')
  return max(found, key=os.path.getmtime)


def profile_train_step(config, global_batch: int, num_steps: int, log_dir: str) -> dict:
  """Traces num_steps train steps (after a compile and 3 warm-up steps) into log_dir and
  writes log_dir/profile_summary.txt; returns the summary."""
  setup = steps.setup_train_step(config, global_batch)
  steps.run_steps(setup, 3)
  hlo = setup.recipe.train_step.hlo_text(setup.state, setup.batch)
  module, _ = parse_hlo(hlo)
  with jax.profiler.trace(log_dir):
    steps.run_steps(setup, num_steps)
  data = jax.profiler.ProfileData.from_file(_latest_xplane(log_dir))
  times, traced_modules = step_op_times(op_times(data), module)
  if not times:
    raise RuntimeError(f'the trace in {log_dir} holds no device ops of {module}')
  summary = summarize(times, categories(hlo), num_steps)
  summary.update({'module': module, 'traced_modules': traced_modules, 'steps': num_steps,
                  'trace_dir': log_dir})
  title = (f'{config.name}: train step profile, {num_steps} steps, global batch {global_batch}, '
           f'{config.model.dtype}, {jax.device_count()} x {jax.devices()[0].device_kind}')
  with open(os.path.join(log_dir, 'profile_summary.txt'), 'w') as f:
    f.write(summary_text(summary, title))
  with open(os.path.join(log_dir, 'train_step.hlo.txt'), 'w') as f:
    f.write(hlo)
  return summary
