"""Figure 1 network with BN added to each hidden layer, before the sigmoid."""

from configs import fmnist_mlp


def get_config():
  c = fmnist_mlp.get_config()
  c.name = 'fashion_mnist_mlp_bn'
  c.model.batch_norm = True
  return c
