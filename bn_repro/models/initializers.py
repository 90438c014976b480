"""Weight initializers sampled with numpy on the host.

flax's initializers draw with jax.random inside the jitted `init`; on a CPU
XLA compiles random-number code for every weight shape, which dominates the
start-up of small runs (docs/performance.md has the measurement). These draw
the same distributions with numpy inside a `pure_callback`, seeded by the jax
key flax hands them, so `init` compiles quickly and stays a pure function of
its key: every process of a multi-host run gets the same weights.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

# Standard deviation of a unit normal truncated to [-2, 2]; dividing by it
# gives the truncated draw the requested variance (flax/TF convention).
_TRUNCATED_STD = 0.87962566103423978


def _host_rng(key_data) -> np.random.Generator:
  return np.random.default_rng([int(v) for v in np.asarray(key_data).ravel()])


def _truncated_normal(rng: np.random.Generator, shape) -> np.ndarray:
  values = rng.standard_normal(shape)
  outside = np.abs(values) > 2
  while outside.any():
    values[outside] = rng.standard_normal(int(outside.sum()))
    outside = np.abs(values) > 2
  return values / _TRUNCATED_STD


def _host_initializer(sample_fn):
  """sample_fn(numpy Generator, shape) -> float64 array."""

  def init(key, shape, dtype=jnp.float32):
    shape = tuple(shape)

    def sample(key_data):
      return sample_fn(_host_rng(key_data), shape).astype(dtype)

    return jax.pure_callback(sample, jax.ShapeDtypeStruct(shape, dtype),
                             jax.random.key_data(key))

  return init


def fan_in(shape) -> int:
  """Inputs feeding one output unit: prod(kernel window) * input channels."""
  return math.prod(shape[:-1])


def variance_scaling(scale: float):
  """Truncated normal with variance scale / fan_in (He: scale 2, LeCun: scale 1)."""
  return _host_initializer(
      lambda rng, shape: _truncated_normal(rng, shape) * math.sqrt(scale / fan_in(shape)))


def normal(stddev: float):
  """Plain Gaussian with a fixed standard deviation."""
  return _host_initializer(lambda rng, shape: rng.standard_normal(shape) * stddev)


def he_normal(gain: float = 1.0):
  return variance_scaling(2.0 * gain ** 2)


def lecun_normal():
  return variance_scaling(1.0)
