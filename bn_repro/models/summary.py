"""Per-layer table, parameter count and forward FLOPs of a model."""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import traverse_util

from bn_repro.models.bn_inception import InceptionModule, Stem
from bn_repro.models.layers import ConvUnit
from bn_repro.models.mlp import DenseUnit

_TABLE_MODULES = (ConvUnit, DenseUnit, InceptionModule, Stem)
_TABLE_NAMES = ('conv1_depthwise', 'logits')


def count_params(params) -> int:
  return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(params))


def _in_table(module: nn.Module) -> bool:
  return isinstance(module, _TABLE_MODULES) or module.name in _TABLE_NAMES


def _trace_one_image(model: nn.Module, variables, image_shape, interceptor) -> None:
  """Traces the forward pass of one abstract image (no compute), calling `interceptor`
  on every module method call."""
  image = jax.ShapeDtypeStruct((1,) + tuple(image_shape), jnp.float32)
  with nn.intercept_methods(interceptor):
    jax.eval_shape(lambda v, x: model.apply(v, x), variables, image)


def layer_rows(model: nn.Module, variables, image_shape) -> list[tuple[str, tuple, int]]:
  """(layer path, output shape for one image, parameter count), in forward order."""
  outputs = []

  def record(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    if context.method_name == '__call__' and _in_table(context.module):
      outputs.append((context.module.path, out.shape[1:]))
    return out

  _trace_one_image(model, variables, image_shape, record)
  params = traverse_util.flatten_dict(variables['params'])
  rows = []
  for path, shape in outputs:
    n = sum(math.prod(p.shape) for k, p in params.items() if k[:len(path)] == path)
    rows.append(('/'.join(path), tuple(shape), n))
  return rows


def counted_flops(model: nn.Module, variables, image_shape) -> float:
  """Forward FLOPs of one image counted from its convolutions and dense layers (2 per
  multiply-add; normalization, pooling and activations, a few percent, are left out)."""
  total = 0

  def record(next_fun, args, kwargs, context):
    nonlocal total
    out = next_fun(*args, **kwargs)
    module = context.module
    if context.method_name == '__call__' and isinstance(module, (nn.Conv, nn.Dense)):
      kernel = module.variables['params']['kernel']
      per_output = math.prod(kernel.shape[:-1])     # window x input channels (per group)
      total += 2 * per_output * math.prod(out.shape[1:])
    return out

  _trace_one_image(model, variables, image_shape, record)
  return float(total)


def forward_flops(model: nn.Module, variables, image_shape) -> float | None:
  """XLA's cost-analysis FLOPs for one image's inference forward pass."""
  image = jax.ShapeDtypeStruct((1,) + tuple(image_shape), jnp.float32)
  lowered = jax.jit(lambda v, x: model.apply(v, x)).lower(variables, image)
  analysis = lowered.cost_analysis()
  if isinstance(analysis, (list, tuple)):  # older jax returned one dict per device
    analysis = analysis[0] if analysis else None
  return float(analysis['flops']) if analysis and 'flops' in analysis else None


def format_table(rows) -> str:
  width = max(len(name) for name, _, _ in rows) + 2
  lines = [f'{"layer":<{width}}{"output":>18}{"params":>12}']
  for name, shape, n in rows:
    shape_text = 'x'.join(map(str, shape))
    lines.append(f'{name:<{width}}{shape_text:>18}{n:>12,}')
  return '\n'.join(lines)
