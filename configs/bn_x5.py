"""BN-x5: BN-Baseline with all the changes of the paper's section 4.2.1."""

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
