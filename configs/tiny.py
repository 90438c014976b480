"""A tiny BN-x30 twin for tests: every piece of the real run, shrunk to seconds."""

from configs import small_scale


def get_config():
  c = small_scale.get_config('bn_x30,fashion_mnist')
  c.name = 'tiny'
  c.model.width = 1 / 16
  c.global_batch_size = 16           # 2 examples on each of 8 devices
  c.eval_batch_size = 64
  c.train_for = '4 steps'
  c.hooks.eval.every = '2 steps'
  c.log_every = '1 steps'
  c.hooks.checkpoint.every = '2 steps'
  c.data.shuffle_buffer = 256
  c.data.in_memory = False   # read the records as ImageNet is read (and start faster)
  c.data.eval_split = 'test[:256]'
  c.hooks.targets.values = (0.2,)
  c.model.bn.momentum = 0.5  # the EMA must follow the weights within a few steps
  c.optimizer.lr_scale = 1.0  # the paper's 0.045: a 4-channel-wide network is unstable at 10x
  return c
