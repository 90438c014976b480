"""BN-x5-Sigmoid: BN-x5 with sigmoid instead of ReLU.

  python scripts/train.py --config configs/bn_x5_sigmoid.py --workdir DIR

Expected, the paper's Figure 3 (ImageNet validation, single crop): max top-1 69.8%
(Inception with sigmoids stays at chance). Not yet measured with this code at full size;
the Fashion-MNIST twin, configs/small_scale.py:bn_x5_sigmoid, has its numbers there.
"""

from configs import bn_x5


def get_config():
  c = bn_x5.get_config()
  c.name = 'bn_x5_sigmoid'
  c.model.activation = 'sigmoid'
  return c
