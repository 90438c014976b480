"""The paper's Figure 1 network (section 4.1) on Fashion-MNIST: 3x100 sigmoid, no BN."""

from configs import small_scale, base


def get_config():
  c = small_scale.twin(base.get_config())
  c.name = 'fashion_mnist_mlp'
  c.model = m = base.get_config().model
  for key in ('stem', 'widths', 'width', 'lrn', 'dropout_rate', 'per_activation_bn',
              'kernel_init_scale'):
    del m[key]
  m.name = 'mlp'
  m.num_classes = 10
  m.batch_norm = False
  m.activation = 'sigmoid'
  m.hidden_sizes = (100, 100, 100)
  m.init_std = 0.05                # chosen: "small random Gaussian values"
  c.data.min_area = 1.0            # the paper's MNIST run uses the plain images
  c.data.flip = False
  c.global_batch_size = 60         # the paper: 60 examples per mini-batch
  c.num_epochs = -1.0
  c.num_train_steps = 50_000       # the paper: 50,000 steps
  c.eval_every_epochs = -1.0
  c.eval_every_steps = 1000
  c.optimizer.learning_rate = 0.5  # chosen: plain SGD (the paper gives no optimizer)
  c.optimizer.lr_scale = 1.0
  c.optimizer.momentum = 0.0
  c.optimizer.weight_decay = 0.0
  c.optimizer.lr_decay_factor = 1.0
  c.target_accuracies = (0.80, 0.85)
  return c
