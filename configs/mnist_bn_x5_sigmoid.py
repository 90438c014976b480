"""MNIST twin of bn_x5_sigmoid.py: BN-x5-Sigmoid: BN-x5 with sigmoid instead of ReLU."""

from configs import bn_x5_sigmoid, small_scale


def get_config():
  return small_scale.twin(bn_x5_sigmoid.get_config(), dataset='mnist')
