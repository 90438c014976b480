"""BN-x5: BN-Baseline with all the changes of the paper's section 4.2.1.

  python scripts/train.py --config configs/bn_x5.py --workdir DIR

Expected, the paper's Figure 3 (ImageNet validation, single crop): max top-1 73.0%;
Inception's best (72.2%) after 2.1e6 steps, 14x fewer than Inception. Not yet measured
with this code at full size; the Fashion-MNIST twin, configs/small_scale.py:bn_x5, has
its numbers there.
"""

from configs import bn_baseline


def get_config():
  c = bn_baseline.get_config()
  c.name = 'bn_x5'
  c.optimizer.learning_rate = 0.0075       # increase the learning rate (5x)
  c.model.dropout_rate = 0.0               # remove dropout
  c.optimizer.weight_decay /= 5            # reduce the L2 weight regularization 5x
  c.optimizer.lr_decay_speedup = 6.0       # accelerate the learning rate decay 6x
  c.model.lrn = False                      # remove local response normalization
  c.data.shuffle_buffer = 16384            # shuffle more thoroughly (chosen buffer size)
  c.data.photometric_strength = 0.5        # reduce photometric distortions (chosen: half)
  return c
