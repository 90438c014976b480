"""Small-scale twins of the paper's ImageNet models, for Fashion-MNIST / MNIST on a CPU.

`twin(config)` keeps everything that defines a paper model (BN or not,
activation, LRN, dropout, L2, decay speed-up, the paper's relative learning
rates) and shrinks the rest: the small-input stem, a width multiplier, 28x28
grayscale inputs, a short schedule. Same code as the full-size network.
"""

# One factor multiplies every paper learning rate at this scale (the paper's
# rates go with per-replica batches of 32 on a far larger problem); chosen so
# the no-BN Inception twin trains well. See results/README.md.
LR_SCALE = 10.0


def twin(c, dataset='fashion_mnist'):
  c.name = f'{dataset}_{c.name}'
  c.data.dataset = dataset
  c.data.image_size = 28
  c.data.train_split = 'train'
  c.data.eval_split = 'test'
  c.data.min_area = 0.5              # chosen: 28x28 images tolerate milder crops than ImageNet
  c.data.photometric_strength = 0.0  # grayscale: no colour distortions
  c.data.shuffle_buffer = 60_000     # the whole training set
  c.data.cache_eval = True
  c.data.in_memory = True
  c.model.num_classes = 10
  c.model.stem = 'small'
  c.model.width = 0.125
  c.global_batch_size = 64
  c.eval_batch_size = 1000
  c.optimizer.lr_scale = LR_SCALE
  c.num_epochs = 10.0
  c.eval_every_epochs = 0.5
  c.log_every_steps = 50
  c.checkpoint_every_steps = 1000
  c.target_accuracies = (0.85, 0.88, 0.90)
  return c
