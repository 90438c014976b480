"""Errors a user can fix: the scripts print them as one line and exit non-zero."""


class UserError(Exception):
  """A problem with the user's config, data or workdir, not a bug."""


class ConfigError(UserError, ValueError):
  """A config field has a value the codebase cannot use."""


class DataError(UserError):
  """A dataset is missing or unusable."""


class CheckpointError(UserError):
  """A checkpoint cannot be restored into the configured run."""


class Interrupted(Exception):
  """A run stopped early on purpose (a signal), after saving what it needs to resume."""


def check_choice(field: str, value, allowed) -> None:
  if value not in allowed:
    raise ConfigError(f'{field}={value!r} is not one of {tuple(allowed)}')


def check_positive(field: str, value) -> None:
  if not value > 0:
    raise ConfigError(f'{field}={value!r} must be > 0')


def check_range(field: str, value, low, high) -> None:
  """low <= value < high."""
  if not low <= value < high:
    raise ConfigError(f'{field}={value!r} must be in [{low}, {high})')
