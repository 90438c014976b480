"""Inception: the paper's baseline without BN (GoogLeNet recipe, initial LR 0.0015).

  python scripts/train.py --config configs/inception.py --workdir DIR

Expected, the paper's Figure 3 (ImageNet validation, single crop): max top-1 72.2%,
reached after 31.0e6 training steps. Not yet measured with this code at full size; the
Fashion-MNIST twin, configs/small_scale.py:inception, has its numbers there.
"""

from configs import base


def get_config():
  c = base.get_config()
  c.name = 'inception'
  return c
