"""BN-x30 with BN statistics over each replica's 32 examples, as in the paper.

  python scripts/train.py --config configs/bn_x30_per_replica.py --workdir DIR   # 8 devices

Expected: BN-x30's number in the paper's Figure 3 (74.8% max top-1 on ImageNet validation),
which was trained this way. The paper's replicas each normalized over their own
mini-batch of 32; here each device does (model.bn.group_size = 1), so run it on
global_batch_size / 32 devices: 8 for the default global batch of 256.
"""

from configs import bn_x30


def get_config():
  c = bn_x30.get_config()
  c.name = 'bn_x30_per_replica'
  c.model.bn.group_size = 1
  return c
