"""MNIST twin of bn_x5.py: BN-x5: BN-Baseline with all the changes of the paper's section 4.2.1."""

from configs import bn_x5, small_scale


def get_config():
  return small_scale.twin(bn_x5.get_config(), dataset='mnist')
