"""The BN-Inception family and the Figure 1 MLP: shapes, counts, variants, bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bn_repro.models.batchnorm import EMA_STATS
from bn_repro.errors import ConfigError
from bn_repro.models import (abstract_variables, build_model, init_variables,
                             initializers)
from bn_repro.models import summary
from configs import bn_x30, inception, small_scale, tiny

# The paper's Figure 5 table, with the output sizes its own columns give
# (it prints 576/576/1024 for 4c/4d/4e and pre-stride sizes for 3c/4e).
TABLE_OUTPUTS = {
    'stem/conv1': (112, 112, 64),
    'stem/conv2': (56, 56, 192),
    'stem': (28, 28, 192),
    'inception_3a': (28, 28, 256),
    'inception_3b': (28, 28, 320),
    'inception_3c': (14, 14, 576),
    'inception_4a': (14, 14, 576),
    'inception_4b': (14, 14, 576),
    'inception_4c': (14, 14, 608),
    'inception_4d': (14, 14, 608),
    'inception_4e': (7, 7, 1056),
    'inception_5a': (7, 7, 1024),
    'inception_5b': (7, 7, 1024),
    'logits': (1000,),
}


def _rows(config, image_size=224, channels=3):
  model = build_model(config.model, image_size=image_size)
  shape = (image_size, image_size, channels)
  return model, {name: (out, n) for name, out, n in
                 summary.layer_rows(model, abstract_variables(model, shape), shape)}


def test_layer_shapes_at_224_match_the_paper_table():
  _, rows = _rows(bn_x30.get_config())
  for name, shape in TABLE_OUTPUTS.items():
    assert rows[name][0] == shape, name


@pytest.mark.parametrize('stem,expected', [('separable', 11_278_528), ('plain', 11_285_224)])
def test_parameter_count(stem, expected):
  config = bn_x30.get_config()
  config.model.stem = stem
  model = build_model(config.model, image_size=224)
  variables = abstract_variables(model, (224, 224, 3))
  assert summary.count_params(variables['params']) == expected


def test_slim_widths_give_the_printed_channel_counts():
  config = bn_x30.get_config()
  config.model.widths = 'slim'
  _, rows = _rows(config)
  assert rows['inception_4c'][0][-1] == 576
  assert rows['inception_4d'][0][-1] == 576
  assert rows['inception_4e'][0][-1] == 1024


def test_no_bn_inception_has_conv_biases_and_no_bn_parameters():
  model = build_model(inception.get_config().model, image_size=224)
  variables = abstract_variables(model, (224, 224, 3))
  unit = variables['params']['inception_3a']['b1x1']
  assert set(unit) == {'conv'} and 'bias' in unit['conv']
  assert not jax.tree.leaves(variables.get(EMA_STATS, {}))
  bn_unit = abstract_variables(build_model(bn_x30.get_config().model, image_size=224),
                               (224, 224, 3))['params']['inception_3a']['b1x1']
  assert 'bias' not in bn_unit['conv'] and set(bn_unit['bn']) == {'scale', 'bias'}


def _tiny(**model_overrides):
  config = tiny.get_config()
  for key, value in model_overrides.items():
    config.model[key] = value
  return config


# Options are combined so that every one is exercised with few compiles.
VARIANTS = {
    'bn_relu_small_stem': ({}, 28, 1),
    'no_bn_lrn_dropout_plain_stem': (
        dict(batch_norm=False, lrn=True, dropout_rate=0.4, stem='plain'), 32, 3),
    'sigmoid_slim_per_activation_separable_stem': (
        dict(activation='sigmoid', widths='slim', per_activation_bn=True,
             stem='separable'), 32, 3),
    'bfloat16_eleven_classes_36px': (dict(dtype='bfloat16', num_classes=11), 36, 1),
}


@pytest.mark.parametrize('variant', VARIANTS)
def test_every_variant_runs_forward_and_backward(variant):
  overrides, size, channels = VARIANTS[variant]
  config = _tiny(**overrides)
  model = build_model(config.model, image_size=size)
  variables = init_variables(model, (size, size, channels), jax.random.key(0))
  x = jax.random.normal(jax.random.key(1), (4, size, size, channels))
  labels = jnp.arange(4) % config.model.num_classes

  @jax.jit
  def loss_and_grad(params):
    def loss(params):
      logits, _ = model.apply({'params': params, EMA_STATS: variables[EMA_STATS]}, x,
                              train=True, mutable=[EMA_STATS],
                              rngs={'dropout': jax.random.key(2)})
      return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(4), labels]), logits
    return jax.value_and_grad(loss, has_aux=True)(params)

  (value, logits), grads = loss_and_grad(variables['params'])
  assert logits.shape == (4, config.model.num_classes) and logits.dtype == jnp.float32
  assert np.isfinite(value)
  grad_norms = [float(jnp.abs(g).max()) for g in jax.tree.leaves(grads)]
  assert all(np.isfinite(grad_norms)) and max(grad_norms) > 0
  eval_logits = jax.jit(model.apply)(variables, x)  # inference with the EMA statistics
  assert np.isfinite(np.asarray(eval_logits)).all()


@pytest.mark.parametrize('batch_norm', [False, True])
def test_figure_one_mlp(batch_norm):
  config = small_scale.get_config('mlp,fashion_mnist')
  config.model.batch_norm = batch_norm
  model = build_model(config.model, image_size=28)
  variables = init_variables(model, (28, 28, 1), jax.random.key(0))
  sizes = {k: v['dense']['kernel'].shape for k, v in variables['params'].items()
           if k.startswith('hidden')}
  assert sizes == {'hidden1': (784, 100), 'hidden2': (100, 100), 'hidden3': (100, 100)}
  assert ('bn' in variables['params']['hidden1']) == batch_norm
  assert 'bias' in variables['params']['hidden1']['dense'] or batch_norm
  logits, _ = model.apply(variables, jnp.ones((5, 28, 28, 1)), train=True,
                          mutable=[EMA_STATS])
  assert logits.shape == (5, 10)


def test_init_is_deterministic_and_keyed():
  config = tiny.get_config()
  model = build_model(config.model, image_size=28)
  a = init_variables(model, (28, 28, 1), jax.random.key(0))
  b = init_variables(model, (28, 28, 1), jax.random.key(0))
  c = init_variables(model, (28, 28, 1), jax.random.key(1))
  kernel = lambda v: np.asarray(v['params']['inception_3a']['b1x1']['conv']['kernel'])
  np.testing.assert_array_equal(kernel(a), kernel(b))
  assert not np.allclose(kernel(a), kernel(c))


def test_host_initializers_have_the_requested_variance():
  shape = (3, 3, 64, 256)
  he = initializers.he_normal()(jax.random.key(0), shape)
  assert abs(float(jnp.std(he)) / np.sqrt(2 / (3 * 3 * 64)) - 1) < 0.02
  assert float(jnp.abs(he).max()) <= 2 * np.sqrt(2 / (3 * 3 * 64)) / 0.8796 + 1e-6
  small = initializers.normal(0.01)(jax.random.key(1), (500, 100))
  assert abs(float(jnp.std(small)) - 0.01) < 0.0005


@pytest.mark.parametrize('field,value,message', [
    ('activation', 'tanh', "model.activation='tanh' is not one of"),
    ('stem', 'huge', "model.stem='huge' is not one of"),
    ('width', 0.0, 'model.width=0.0 must be > 0'),
    ('width', -1.0, 'model.width=-1.0 must be > 0'),
    ('widths', 'wide', "model.widths='wide' is not one of"),
    ('dtype', 'float16', "model.dtype='float16' is not one of"),
    ('dropout_rate', 1.0, 'model.dropout_rate=1.0 must be in'),
    ('name', 'resnet', "model.name='resnet' is not one of"),
])
def test_bad_model_options_are_one_line_errors(field, value, message):
  config = bn_x30.get_config()
  config.model[field] = value
  with pytest.raises(ConfigError, match=message) as info:
    build_model(config.model, image_size=224)
  assert '\n' not in str(info.value)


def test_unknown_model_option_is_named():
  config = bn_x30.get_config()
  config.model.colour = 'blue'
  with pytest.raises(ConfigError, match='model.colour is not a known option'):
    build_model(config.model, image_size=224)


def test_input_too_small_for_the_stem():
  config = bn_x30.get_config()
  with pytest.raises(ConfigError, match="image size 28 is too small for model.stem='separable'.*stem='small'"):
    build_model(config.model, image_size=28)
