"""Named points where a test makes this process crash or receive a signal, on purpose.

  BN_REPRO_FAULT='<point>@<step>:<action>'   action: kill (SIGKILL), term (SIGTERM), int (SIGINT)

makes point(<point>, <step>) do that, once; with BN_REPRO_FAULT_PROCESS=<i> as well, only
in process i of a multi-process run (BN_REPRO_PROCESS_ID, set by parallel/launch.py).
Without the variable (always, outside the crash tests) point() does nothing. The points:
'start' (state ready, before the first step), 'step' (a train step dispatched, before its
hooks), 'checkpoint' (a checkpoint write started), 'evaluate' (an evaluation hook about to
run), 'population_swap' (new population statistics complete, between the two renames that
swap them in; the step is the checkpoint's).
"""

from __future__ import annotations

import os
import signal

_ACTIONS = {'kill': signal.SIGKILL, 'term': signal.SIGTERM, 'int': signal.SIGINT}


def _parse(text: str):
  point, _, rest = text.partition('@')
  step, _, action = rest.partition(':')
  return point, int(step), _ACTIONS[action]


def _planned():
  if not os.environ.get('BN_REPRO_FAULT'):
    return None
  only = os.environ.get('BN_REPRO_FAULT_PROCESS')
  if only is not None and only != os.environ.get('BN_REPRO_PROCESS_ID', '0'):
    return None
  return _parse(os.environ['BN_REPRO_FAULT'])


_PLANNED = _planned()


def point(name: str, step: int) -> None:
  global _PLANNED
  if _PLANNED and _PLANNED[:2] == (name, step):
    signal_number = _PLANNED[2]
    _PLANNED = None
    os.kill(os.getpid(), signal_number)
