"""The paper's six ensemble members (section 4.2.3): BN-x30 with some of
larger initial conv weights, dropout 5% or 10%, and per-activation BN in the
last hidden layer. The paper does not say which member had which; these six
cover the combinations it names. Each member also gets its own seed.

  python scripts/train.py --config configs/bn_x30_ensemble.py:3 --workdir ...
"""

from configs import bn_x30

LARGER_INIT = 2.0  # chosen: "larger initial weights" of the conv layers, as a He-init multiplier

MEMBERS = {
    1: dict(kernel_init_scale=LARGER_INIT),
    2: dict(dropout_rate=0.05),
    3: dict(dropout_rate=0.10),
    4: dict(per_activation_bn=True),
    5: dict(kernel_init_scale=LARGER_INIT, dropout_rate=0.05),
    6: dict(dropout_rate=0.10, per_activation_bn=True),
}


def member(c, number):
  number = int(number)
  if number not in MEMBERS:
    raise ValueError(f'ensemble member {number} is not one of {sorted(MEMBERS)}')
  c.name = f'{c.name}_member{number}'
  c.seed = number
  for key, value in MEMBERS[number].items():
    c.model[key] = value
  return c


def get_config(number='1'):
  return member(bn_x30.get_config(), number)
