"""Input data: dataset facts (`specs`), on-device preprocessing (`on_device`), and the
TensorFlow side (`datasets`, `pipeline`, `preprocessing`, `crops`).

`specs` and `on_device` import no TensorFlow: the model, the steps and the synthetic-data
benchmark run without it installed.
"""
