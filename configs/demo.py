"""The demo: the Fashion-MNIST BN-x30 twin, shortened to 2 epochs.

  make demo    # python scripts/demo.py --config configs/demo.py --workdir workdirs/demo

Expected (README, Quick start; measured on a 2-core x86 VM with two simulated devices):
Fashion-MNIST test top-1 0.9024 with population statistics, 0.8886 with the EMA.

It evaluates once, at the end (the demo script then adds population
statistics). `make demo` runs it on one simulated device per CPU core (see
docs/performance.md for why).
"""

from configs import small_scale


def get_config():
  c = small_scale.get_config('bn_x30,fashion_mnist')
  c.name = 'demo_fashion_mnist_bn_x30'
  c.train_for = '2 epochs'
  c.hooks.eval.every = 'end'   # the final evaluation only
  c.hooks.checkpoint.every = '500 steps'
  return c
