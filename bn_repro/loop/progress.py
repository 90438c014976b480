"""The loop's progress report: steps/s, share done and ETA, logged and written as metrics.

Reports at every `every_steps`-th step, at the last step, and at least every
`every_secs` seconds. The rate is measured between reports on the host clock;
the first call only starts the clock, so the first report leaves out the
compilation of the train step.
"""

from __future__ import annotations

import time

from absl import logging


def _duration(seconds: float) -> str:
  minutes, seconds = divmod(int(seconds), 60)
  hours, minutes = divmod(minutes, 60)
  return f'{hours}h{minutes:02d}m' if hours else f'{minutes}m{seconds:02d}s'


class Progress:

  def __init__(self, *, num_steps: int, writer, every_steps: int, every_secs: float = 60.0):
    self.num_steps = num_steps
    self.writer = writer
    self.every_steps = every_steps
    self.every_secs = every_secs
    self._started = time.monotonic()
    self._last = None   # (step, time) of the last report, or of the first call

  def __call__(self, step: int) -> None:
    now = time.monotonic()
    if self._last is None:
      self._last = (step, now)
      return
    last_step, last_time = self._last
    due = (step % self.every_steps == 0 or step == self.num_steps
           or now - last_time >= self.every_secs)
    if step == last_step or not due:
      return
    rate = (step - last_step) / max(now - last_time, 1e-9)
    logging.info('%.2f steps/s, %.1f%% (%d/%d), ETA %s', rate, 100 * step / self.num_steps,
                 step, self.num_steps, _duration((self.num_steps - step) / rate))
    self.writer.write_scalars(step, {'steps_per_sec': rate, 'uptime': now - self._started})
    self._last = (step, now)
