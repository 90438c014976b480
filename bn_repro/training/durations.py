"""Durations in configs, one convention everywhere: '2000 steps', '1.5 epochs'.

Hook cadences also take 'end' (only when training ends) and 'never' (off).
"""

from __future__ import annotations

import dataclasses
import re

from bn_repro.errors import ConfigError

_PATTERN = re.compile(r'^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*(steps?|epochs?)\s*$')
END, NEVER = 'end', 'never'


@dataclasses.dataclass(frozen=True)
class Duration:
  amount: float
  unit: str          # 'steps' or 'epochs'

  def steps(self, steps_per_epoch: int) -> int:
    """In optimizer steps; a non-zero duration in epochs is at least one step."""
    if self.unit == 'steps':
      return int(self.amount)
    return max(1, round(self.amount * steps_per_epoch)) if self.amount else 0


def parse(field: str, text, *, allow_zero: bool = False) -> Duration:
  """'N steps' or 'X epochs' -> Duration, or a ConfigError naming the field."""
  match = _PATTERN.match(str(text))
  if not match:
    raise ConfigError(f"{field}={text!r} is not a duration: write e.g. '2000 steps' or "
                      "'1.5 epochs'")
  amount, unit = float(match.group(1)), match.group(2).rstrip('s') + 's'
  if unit == 'steps' and amount != int(amount):
    raise ConfigError(f'{field}={text!r}: a number of steps must be whole')
  if amount < 0 or (amount == 0 and not allow_zero):
    raise ConfigError(f'{field}={text!r} must be {">= 0" if allow_zero else "> 0"}')
  return Duration(amount, unit)


def parse_cadence(field: str, text) -> Duration | str:
  """A hook's `every`: a Duration, END or NEVER."""
  if str(text).strip() in (END, NEVER):
    return str(text).strip()
  return parse(field, text)


def cadence_in_steps(cadence: Duration | str, steps_per_epoch: int) -> int:
  """Steps between two runs of a hook; 0: no periodic runs (END or NEVER)."""
  return cadence.steps(steps_per_epoch) if isinstance(cadence, Duration) else 0
