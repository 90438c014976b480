"""The BN-Inception architecture (paper Appendix, Figure 5) as a table.

Columns follow the paper. The paper's printed output sizes for 4c, 4d and 4e
(576, 576, 1024) do not match its own columns, which sum to 608, 608 and 1056;
like the widely used Caffe port we follow the columns (`PAPER`). TF-slim's
inception_v2 uses 96-channel pool projections in 4c/4d instead (`SLIM`), which
gives the printed 576/576/1024.

In the stride-2 modules (3c, 4e) the last 3x3 conv of each conv branch has
stride 2, the pool branch is a 3x3/2 max pool passed through unprojected
(pool_proj = 0), and there is no 1x1 branch (n1x1 = 0).
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class InceptionSpec:
  name: str
  n1x1: int          # 1x1 branch (0: none)
  n3x3_reduce: int   # 3x3 branch: 1x1 reduce, then one 3x3
  n3x3: int
  dbl_reduce: int    # double-3x3 branch: 1x1 reduce, then two 3x3
  dbl_3x3: int
  pool: str          # 'avg' or 'max', 3x3 window
  pool_proj: int     # 1x1 projection after the pool (0: pass through)
  stride: int = 1


_ = InceptionSpec
PAPER = (
    #  name  #1x1 #3x3red #3x3 dbl-red dbl-3x3 pool  proj stride
    _('3a',   64,   64,    64,   64,    96,   'avg',  32),
    _('3b',   64,   64,    96,   64,    96,   'avg',  64),
    _('3c',    0,  128,   160,   64,    96,   'max',   0, stride=2),
    _('4a',  224,   64,    96,   96,   128,   'avg', 128),
    _('4b',  192,   96,   128,   96,   128,   'avg', 128),
    _('4c',  160,  128,   160,  128,   160,   'avg', 128),
    _('4d',   96,  128,   192,  160,   192,   'avg', 128),
    _('4e',    0,  128,   192,  192,   256,   'max',   0, stride=2),
    _('5a',  352,  192,   320,  160,   224,   'avg', 128),
    _('5b',  352,  192,   320,  192,   224,   'max', 128),
)
del _

SLIM = tuple(
    dataclasses.replace(spec, pool_proj=96) if spec.name in ('4c', '4d') else spec
    for spec in PAPER)

MODULE_TABLES = {'paper': PAPER, 'slim': SLIM}

# Stems: the layers before inception 3a.
#   'separable': conv1 = 7x7/2 depthwise (multiplier 8) + 1x1 to 64, max pool 3x3/2,
#                conv2 = 1x1 reduce to 64 + 3x3 to 192, max pool 3x3/2  (224 -> 28)
#   'plain':     the same with an ordinary 7x7/2 conv1
#   'small':     for 28x28 / 32x32 inputs: conv1 = 3x3/1 to 64, conv2 as above,
#                max pool 3x3/2 (28 -> 14)
STEM_CONV1_CHANNELS = 64
STEM_DEPTH_MULTIPLIER = 8
STEM_CONV2_REDUCE = 64
STEM_CONV2_CHANNELS = 192
STEMS = ('separable', 'plain', 'small')
# Total downsampling of input -> last module for each stem; the input must be
# at least this large.
TOTAL_STRIDE = {'separable': 32, 'plain': 32, 'small': 8}
