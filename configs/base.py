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
  # Which devices share BN batch statistics: 0 all (the default: the statistics of
  # a global batch do not depend on how many accelerators share it, so a config
  # behaves the same on any cluster); 1 each device alone; k groups of k. The
  # paper normalized over each replica's 32 examples: configs/*_per_replica.py.
  m.bn.group_size = 0

  c.data = d = ml_collections.ConfigDict()
  d.dataset = 'imagenet2012'
  # 'tfds': the dataset's records; 'synthetic': noise batches of its shapes, no TensorFlow
  # needed (to time the loop on an accelerator image: bn_repro/data/synthetic.py).
  d.source = 'tfds'
  # 0: the original images; 256/288/320/352: a copy with shorter sides at most that
  # (scripts/prepare_data.py --shorter_side; bn_repro/data/resized.py says why 320).
  d.stored_shorter_side = 0
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
  # The flip and the photometric distortions run in the train step on the accelerator;
  # the host only decodes, crops and resizes (False: all of it on the host, in tf.data).
  d.augment_on_device = True
  d.shuffle_buffer = 1024        # chosen: modest shuffling, before the paper's "more thorough" change
  d.prefetch = 2                 # batches kept on the devices ahead of the step
  d.cache_eval = False           # keep preprocessed eval images in memory
  d.in_memory = False            # decode the whole dataset once and keep it in memory
  # Fallbacks when the dataset's split sizes are unknown (tfds mock data).
  d.num_train_examples = ml_collections.FieldReference(None, field_type=int)
  d.num_eval_examples = ml_collections.FieldReference(None, field_type=int)

  # Durations are '<N> steps' or '<X> epochs' (hook cadences also 'end' or 'never').
  c.global_batch_size = 256      # chosen: 8 replicas of the paper's 32
  c.eval_batch_size = 256
  c.train_for = '100 epochs'     # chosen; the paper trained for millions of steps of 32
  c.log_every = '100 steps'
  c.check_finite_every = '1 steps'  # NaN/Inf check, one step behind the running step

  # Periodic work during training (bn_repro/loop/hooks.py), run in this order
  # within a step: evaluations, the probe, target tracking, the checkpoint.
  c.hooks = ml_collections.ConfigDict()
  # Exact evaluation of the eval split with the training EMA of the BN statistics.
  c.hooks.eval = dict(kind='evaluate', statistics='ema', num_batches=0, every='1 epochs')
  # The same with the EMA debiased: its initial value's weight removed (off: 'never').
  c.hooks.eval_debiased = dict(kind='evaluate', statistics='ema_debiased', every='never')
  # Also evaluate with population statistics (Algorithm 2) recomputed over this
  # many training batches at each evaluation (off: 'never').
  c.hooks.eval_population = dict(kind='evaluate', statistics='population', num_batches=50,
                                 every='never')
  # Internal-covariate-shift probe (bn_repro/evaluation/ics_probe.py) on the named
  # layers, on the first batch_size examples of the eval split.
  c.hooks.ics_probe = dict(kind='ics_probe', layers=(), batch_size=256, unit=0, every='never')
  # The first step at which eval top-1 reached each value: the paper's "steps to
  # 72.2%" (Inception's best).
  c.hooks.targets = dict(kind='targets', metric='eval_top1', values=(0.722,))
  c.hooks.checkpoint = dict(kind='checkpoint', every='2000 steps', keep=3)

  c.optimizer = o = ml_collections.ConfigDict()
  o.learning_rate = 0.0015       # the paper's initial rate for Inception
  # The paper's rates go with its replicas' batches of 32: the rate used is
  # learning_rate x lr_scale x global_batch_size / reference_batch (linear
  # scaling; 8x at 256), logged at start. scale_with_batch=False drops the last factor.
  o.reference_batch = 32
  o.scale_with_batch = True
  o.lr_scale = 1.0
  o.momentum = 0.9               # GoogLeNet's momentum
  o.nesterov = False
  o.weight_decay = 4e-5          # chosen: L2 weight, TF-slim's value for Inception
  o.decay_bn_params = False      # L2 on BN gamma/beta too?
  o.lr_decay_factor = 0.96       # GoogLeNet: -4% ...
  o.lr_decay_every = '8 epochs'  # ... every 8 epochs
  o.lr_decay_speedup = 1.0       # the paper's BN-x5 change: decay 6x faster
  o.warmup = '0 steps'
  return c
