"""MNIST twin of bn_x30.py: BN-x30: BN-x5 with 6x its initial learning rate (0.045)."""

from configs import bn_x30, small_scale


def get_config():
  return small_scale.twin(bn_x30.get_config(), dataset='mnist')
