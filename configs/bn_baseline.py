"""BN-Baseline: Inception with BN before every nonlinearity, nothing else changed.

  python scripts/train.py --config configs/bn_baseline.py --workdir DIR

Expected, the paper's Figure 3 (ImageNet validation, single crop): max top-1 72.7%;
Inception's best (72.2%) after 13.3e6 steps. Not yet measured with this code at full
size; the Fashion-MNIST twin, configs/small_scale.py:bn_baseline, has its numbers there.
"""

from configs import inception


def get_config():
  c = inception.get_config()
  c.name = 'bn_baseline'
  c.model.batch_norm = True
  return c
