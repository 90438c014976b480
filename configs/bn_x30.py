"""BN-x30: BN-x5 with 6x its initial learning rate (0.045).

  python scripts/train.py --config configs/bn_x30.py --workdir DIR

Expected, the paper's Figure 3 (ImageNet validation, single crop): max top-1 74.8%;
Inception's best (72.2%) after 2.7e6 steps. Not yet measured with this code at full
size; the Fashion-MNIST twin, configs/small_scale.py:bn_x30, has its numbers there.
"""

from configs import bn_x5


def get_config():
  c = bn_x5.get_config()
  c.name = 'bn_x30'
  c.optimizer.learning_rate = 0.045
  return c
