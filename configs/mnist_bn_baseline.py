"""MNIST twin of bn_baseline.py: BN-Baseline: Inception with BN before every nonlinearity, nothing else changed."""

from configs import bn_baseline, small_scale


def get_config():
  return small_scale.twin(bn_baseline.get_config(), dataset='mnist')
