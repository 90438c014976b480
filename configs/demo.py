"""The demo (`make demo`): the Fashion-MNIST BN-x30 twin, shortened to 2 epochs
so that training and evaluation take under 10 minutes on 2 CPU cores.

It evaluates once, at the end (the demo script then adds population
statistics); `make demo` runs it on one simulated device per CPU core, which
trains about 18% faster than a single device on this 2-core machine.
"""

from configs import fmnist_bn_x30


def get_config():
  c = fmnist_bn_x30.get_config()
  c.name = 'demo_fashion_mnist_bn_x30'
  c.num_epochs = 2.0
  c.eval_every_epochs = -1.0   # the final evaluation only
  c.checkpoint_every_steps = 500
  return c
