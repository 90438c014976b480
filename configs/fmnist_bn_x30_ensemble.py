"""Fashion-MNIST twins of the paper's six ensemble members (bn_x30_ensemble.py).

  python scripts/train.py --config configs/fmnist_bn_x30_ensemble.py:3 --workdir ...
"""

from configs import bn_x30, bn_x30_ensemble, small_scale


def get_config(number='1'):
  c = small_scale.twin(bn_x30.get_config())
  return bn_x30_ensemble.member(c, number)
