"""The paper's Figure 1 network on Fashion-MNIST: 3x100 sigmoid, BN before each sigmoid."""

from configs import small_scale


def get_config():
  return small_scale.figure_one_mlp('fashion_mnist', batch_norm=True)
