"""BN-x30: BN-x5 with 6x its initial learning rate (0.045)."""

from configs import bn_x5


def get_config():
  c = bn_x5.get_config()
  c.name = 'bn_x30'
  c.optimizer.learning_rate = 0.045
  return c
