"""BN-Baseline: Inception with BN before every nonlinearity, nothing else changed."""

from configs import inception


def get_config():
  c = inception.get_config()
  c.name = 'bn_baseline'
  c.model.batch_norm = True
  return c
