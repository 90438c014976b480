"""Inception: the paper's baseline without BN (GoogLeNet recipe, initial LR 0.0015)."""

from configs import base


def get_config():
  c = base.get_config()
  c.name = 'inception'
  return c
