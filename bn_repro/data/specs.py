"""Facts about the supported datasets that the model side needs (no TensorFlow here)."""

from __future__ import annotations

import dataclasses

from bn_repro.errors import check_choice


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  tfds_name: str
  channels: int
  num_classes: int
  native_size: int | None   # side of the stored images when all are equal
  # Per-channel mean and std of the [0, 1] pixels, for input standardization.
  mean: tuple[float, ...]
  std: tuple[float, ...]


DATASETS = {
    'imagenet2012': DatasetSpec('imagenet2012', 3, 1000, None,
                                (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    'fashion_mnist': DatasetSpec('fashion_mnist', 1, 10, 28, (0.2860,), (0.3530,)),
    'mnist': DatasetSpec('mnist', 1, 10, 28, (0.1307,), (0.3081,)),
}


# Shorter sides of the smaller copies of imagenet2012 (data/resized.py); 0: the original.
IMAGENET_STORED_SIDES = (256, 288, 320, 352)


def dataset_spec(name: str) -> DatasetSpec:
  check_choice('data.dataset', name, tuple(DATASETS))
  return DATASETS[name]


def image_shape(data_config) -> tuple[int, int, int]:
  """(H, W, C) of the images the model sees."""
  spec = dataset_spec(data_config.dataset)
  return (data_config.image_size, data_config.image_size, spec.channels)
