"""Shared base of the paper's ImageNet models: the GoogLeNet-style recipe.

Every paper model imports this (through its parent in the paper's chain
Inception -> BN-Baseline -> BN-x5 -> BN-x30 / BN-x5-Sigmoid) and overrides only
what the paper changes. Values the paper does not give are marked "chosen".
"""

import ml_collections


def get_config():
  c = ml_collections.ConfigDict()
  c.name = 'base'
  c.seed = 0

  c.model = m = ml_collections.ConfigDict()
  m.name = 'bn_inception'
  m.num_classes = 1000
  m.batch_norm = False
  m.activation = 'relu'
  m.stem = 'separable'        # the paper: a depthwise-separable 7x7 first conv
  m.widths = 'paper'          # the paper's columns: 4c/4d = 608, 4e = 1056 channels
  m.width = 1.0
  m.lrn = True                # GoogLeNet: LRN after the first pool and after conv2
  m.dropout_rate = 0.4        # GoogLeNet: 40% dropout before the classifier
  m.per_activation_bn = False
  m.kernel_init_scale = 1.0
  m.dtype = 'float32'         # 'bfloat16': bf16 compute, float32 params and BN statistics
  m.bn = ml_collections.ConfigDict()
  m.bn.epsilon = 1e-3         # chosen: the paper gives none; TF-slim's value
  m.bn.momentum = 0.99        # chosen: flax's default EMA decay
  m.bn.group_size = 0         # 0: statistics over all devices; 1: per device; k: groups of k

  c.data = d = ml_collections.ConfigDict()
  d.dataset = 'imagenet2012'
  d.data_dir = ml_collections.FieldReference(None, field_type=str)   # tfds data_dir (None: tfds default)
  d.manual_dir = ml_collections.FieldReference(None, field_type=str)  # where the ILSVRC2012 tar files are
  d.local_dir = ml_collections.FieldReference(None, field_type=str)   # MNIST-format IDX .gz files
  d.download = False          # allow tfds to download (never for imagenet2012)
  d.train_split = 'train'
  d.eval_split = 'validation'
  d.image_size = 224
  d.eval_crop_fraction = 0.875   # eval: resize shorter side to 224 / 0.875 = 256, center crop 224
  d.min_area = 0.08              # Inception-style random crop: 8%-100% of the area,
  d.aspect_ratio = (3 / 4, 4 / 3)  # aspect ratio in [3/4, 4/3]
  d.flip = True
  d.photometric_strength = 1.0   # chosen scale of brightness/saturation/hue/contrast jitter
  d.shuffle_buffer = 1024        # chosen: modest shuffling, before the paper's "more thorough" change
  d.prefetch = 2                 # batches kept on the devices ahead of the step
  d.cache_eval = False           # keep preprocessed eval images in memory
  d.in_memory = False            # decode the whole dataset once and keep it in memory
  # Fallbacks when the dataset's split sizes are unknown (tfds mock data).
  d.num_train_examples = ml_collections.FieldReference(None, field_type=int)
  d.num_eval_examples = ml_collections.FieldReference(None, field_type=int)

  # Durations: set *_steps, or leave it -1 and set *_epochs.
  c.global_batch_size = 256      # chosen: 8 accelerators x 32, the paper's per-replica batch
  c.eval_batch_size = 256
  c.num_train_steps = -1
  c.num_epochs = 100.0           # chosen; the paper trained for millions of steps of 32
  c.log_every_steps = 100
  c.eval_every_steps = -1
  c.eval_every_epochs = 1.0
  c.checkpoint_every_steps = 2000
  c.keep_checkpoints = 3
  c.check_finite_every_steps = 1  # NaN/Inf check, one step behind the running step
  c.eval_stats = 'ema'           # BN statistics for evaluations during training
  # > 0: at each evaluation also recompute population statistics (Algorithm 2)
  # over this many training batches and evaluate with them (eval_population_*).
  c.eval_population_batches = 0
  # Record the first step at which eval top-1 reaches each of these.
  c.target_accuracies = (0.722,)  # the paper's "steps to 72.2%" (Inception's best)

  # Internal-covariate-shift probe (bn_repro/ics_probe.py): off unless layers are named.
  c.probe = ml_collections.ConfigDict()
  c.probe.layers = ()            # e.g. ('inception_3a/b1x1', 'inception_5b/b1x1')
  c.probe.every_steps = 500
  c.probe.batch_size = 256       # the first examples of the eval split, fixed
  c.probe.unit = 0               # the unit whose percentiles are recorded

  c.optimizer = o = ml_collections.ConfigDict()
  o.learning_rate = 0.0015       # the paper's initial rate for Inception
  # Effective rate = learning_rate * lr_scale. The paper's rates go with
  # batches of 32 per replica; we scale them linearly to the global batch.
  o.lr_scale = 256 / 32
  o.momentum = 0.9               # GoogLeNet's momentum
  o.nesterov = False
  o.weight_decay = 4e-5          # chosen: L2 weight, TF-slim's value for Inception
  o.decay_bn_params = False      # L2 on BN gamma/beta too?
  o.lr_decay_factor = 0.96       # GoogLeNet: -4% ...
  o.lr_decay_every_epochs = 8.0  # ... every 8 epochs
  o.lr_decay_every_steps = -1    # alternative to epochs
  o.lr_decay_speedup = 1.0       # the paper's BN-x5 change: decay 6x faster
  o.warmup_steps = 0
  return c
