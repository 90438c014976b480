"""MNIST twin of bn_x30_per_replica.py: BN statistics over each device's 32 examples.

The twins' global batch is 64: run it on 2 devices (as `make reproduce` does).
"""

from configs import bn_x30_per_replica, small_scale


def get_config():
  return small_scale.twin(bn_x30_per_replica.get_config(), dataset='mnist')
