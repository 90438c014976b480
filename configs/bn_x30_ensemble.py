"""The paper's six ensemble members (section 4.2.3): BN-x30 with some of
larger initial conv weights, dropout 5% or 10%, and per-activation BN in the
last hidden layer.

  python scripts/train.py --config configs/bn_x30_ensemble.py:3 --workdir DIR3   # N = 1..6
  python scripts/population_stats.py --workdir DIR3 --num_batches 200            # each member
  python scripts/ensemble.py --workdirs DIR1,...,DIR6 --statistics population --crops 144

Expected, the paper's Figure 4 (ImageNet validation, 144 crops, the 6 members): top-1
error 20.1%, top-5 error 4.9% (4.82% on the test server). Not yet measured with this
code at full size.

The paper does not say which member had which change; these six cover the
combinations it names. Each member also gets its own seed.
"""

from bn_repro.errors import UserError
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
  if str(number) not in map(str, MEMBERS):
    # Not a ValueError: config_flags would add its traceback to a ValueError's message.
    raise UserError(f'ensemble member {number!r} is not one of {sorted(MEMBERS)}')
  number = int(number)
  c.name = f'{c.name}_member{number}'
  c.seed = number
  for key, value in MEMBERS[number].items():
    c.model[key] = value
  return c


def get_config(number='1'):
  return member(bn_x30.get_config(), number)
