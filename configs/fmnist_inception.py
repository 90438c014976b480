"""Fashion-MNIST twin of inception.py: Inception: the paper's baseline without BN (GoogLeNet recipe, initial LR 0.0015)."""

from configs import inception, small_scale


def get_config():
  return small_scale.twin(inception.get_config())
