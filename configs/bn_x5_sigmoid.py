"""BN-x5-Sigmoid: BN-x5 with sigmoid instead of ReLU."""

from configs import bn_x5


def get_config():
  c = bn_x5.get_config()
  c.name = 'bn_x5_sigmoid'
  c.model.activation = 'sigmoid'
  return c
