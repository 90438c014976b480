"""Small-scale twins of the paper's ImageNet models, for Fashion-MNIST / MNIST on a CPU.

  python scripts/train.py --config configs/small_scale.py:bn_x30,fashion_mnist --workdir DIR

Expected (results/full/README.md: Fashion-MNIST, best test top-1, mean of 3 seeds, after
the 1.5 epochs `make reproduce` trains rather than this file's 4; BN models with population
statistics): bn_x30 89.0%, bn_x5 89.2%, bn_baseline 86.2%, inception 82.9%; mlp_bn 89.0%
and mlp 88.3% after the paper's 50,000 steps. The reproduction did not run MNIST.

The argument is MODEL[,DATASET]: MODEL one of MODELS, DATASET fashion_mnist
(the default) or mnist. The config is named DATASET_MODEL ('fashion_mnist_bn_x30'),
the name existing workdirs and the committed results carry. The *_per_replica twins
normalize over each device's 32 examples: run them on 2 devices (as `make reproduce`
does).

`twin(config)` keeps everything that defines a paper model (BN or not,
activation, LRN, dropout, L2, decay speed-up, the paper's relative learning
rates) and shrinks the rest: the small-input stem, a width multiplier, 28x28
grayscale inputs, a short schedule. Same code as the full-size network.
"""

from bn_repro.errors import UserError
from configs import (base, bn_baseline, bn_x5, bn_x5_per_replica, bn_x5_sigmoid, bn_x30,
                     bn_x30_per_replica, inception)

# One factor multiplies every paper learning rate at this scale (the paper's
# rates go with per-replica batches of 32 on a far larger problem); chosen so
# that the no-BN Inception twin trains well (the sweep over factors 2, 6 and 20
# is in results/full/README.md).
LR_SCALE = 6.0
# GoogLeNet decays the rate every 8 of about 250 epochs; the twins train for
# a few epochs, so the interval shrinks with the schedule (BN-x5's 6x speed-up
# applies on top, as in the paper).
LR_DECAY_EVERY = '0.25 epochs'
IMAGENET_TRAIN_EXAMPLES = 1_281_167
TRAIN_EXAMPLES = {'fashion_mnist': 60_000, 'mnist': 60_000}


def twin(c, dataset='fashion_mnist'):
  c.name = f'{dataset}_{c.name}'
  c.data.dataset = dataset
  c.data.image_size = 28
  c.data.train_split = 'train'
  c.data.eval_split = 'test'
  # Fashion-MNIST images are already cropped to the object: evaluate on the
  # whole image (ImageNet's 87.5% center crop cuts garment edges off), and
  # train on it too, flips only: in a few epochs scale augmentation slows the
  # fit (both measured in results/full/README.md).
  c.data.eval_crop_fraction = 1.0
  c.data.min_area = 1.0
  # Two of BN-x5's changes are data changes, kept in proportion: "shuffle more
  # thoroughly" scales the model's ImageNet shuffle buffer by the dataset sizes,
  # and "reduce the photometric distortions" keeps the model's strength:
  # brightness and contrast act on [0, 1] intensities alike in one channel or
  # three (hue and saturation need colour and do nothing here).
  c.data.shuffle_buffer = max(1, round(c.data.shuffle_buffer * TRAIN_EXAMPLES[dataset]
                                       / IMAGENET_TRAIN_EXAMPLES))
  c.data.cache_eval = True
  c.data.in_memory = True
  c.model.num_classes = 10
  c.model.stem = 'small'
  c.model.width = 0.125
  c.global_batch_size = 64
  c.eval_batch_size = 1000
  c.optimizer.scale_with_batch = False
  c.optimizer.lr_scale = LR_SCALE
  c.optimizer.lr_decay_every = LR_DECAY_EVERY
  c.train_for = '4 epochs'
  c.hooks.eval.every = '0.5 epochs'
  c.log_every = '50 steps'
  c.hooks.checkpoint.every = '1000 steps'
  c.hooks.targets.values = (0.85, 0.88, 0.90)
  return c


def figure_one_mlp(dataset='fashion_mnist', *, batch_norm=False):
  """The paper's Figure 1 network (section 4.1): 3 hidden layers of 100 sigmoid units,
  with BN before each sigmoid if batch_norm."""
  c = twin(base.get_config(), dataset)
  c.name = f'{dataset}_mlp' + ('_bn' if batch_norm else '')
  c.model = m = base.get_config().model
  for key in ('stem', 'widths', 'width', 'lrn', 'dropout_rate', 'per_activation_bn',
              'kernel_init_scale'):
    del m[key]
  m.name = 'mlp'
  m.num_classes = 10
  m.batch_norm = batch_norm
  m.activation = 'sigmoid'
  m.hidden_sizes = (100, 100, 100)
  m.init_std = 0.05                # chosen: "small random Gaussian values"
  c.data.min_area = 1.0            # the paper's MNIST run uses the plain images,
  c.data.flip = False              # well shuffled
  c.data.photometric_strength = 0.0
  c.data.shuffle_buffer = TRAIN_EXAMPLES[dataset]
  c.global_batch_size = 60         # the paper: 60 examples per mini-batch
  c.train_for = '50000 steps'      # the paper: 50,000 steps
  c.hooks.eval.every = '1000 steps'
  c.optimizer.learning_rate = 0.5  # chosen: plain SGD (the paper gives no optimizer)
  c.optimizer.lr_scale = 1.0
  c.optimizer.momentum = 0.0
  c.optimizer.weight_decay = 0.0
  c.optimizer.lr_decay_factor = 1.0
  c.hooks.targets.values = (0.80, 0.85)
  return c


# The paper models that have a twin, by the name the argument gives them.
PAPER_MODELS = {
    'inception': inception, 'bn_baseline': bn_baseline, 'bn_x5': bn_x5, 'bn_x30': bn_x30,
    'bn_x5_sigmoid': bn_x5_sigmoid, 'bn_x5_per_replica': bn_x5_per_replica,
    'bn_x30_per_replica': bn_x30_per_replica,
}
MODELS = (*PAPER_MODELS, 'mlp', 'mlp_bn')
DATASETS = tuple(TRAIN_EXAMPLES)


def get_config(arg=''):
  """'MODEL[,DATASET]' -> the twin of MODEL (or the Figure 1 MLP) for DATASET."""
  model, _, dataset = arg.partition(',')
  dataset = dataset or 'fashion_mnist'
  if model not in MODELS or dataset not in DATASETS:
    # Not a ValueError: config_flags would add its traceback to a ValueError's message.
    raise UserError(f'configs/small_scale.py:{arg!r}: expected MODEL[,DATASET] with MODEL one '
                     f'of {", ".join(MODELS)} and DATASET one of {", ".join(DATASETS)}')
  if model in ('mlp', 'mlp_bn'):
    return figure_one_mlp(dataset, batch_norm=model == 'mlp_bn')
  return twin(PAPER_MODELS[model].get_config(), dataset)
