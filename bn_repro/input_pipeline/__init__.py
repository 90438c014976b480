"""Input pipelines (tensorflow-datasets + tf.data).

Only `specs` is imported eagerly: the model, the train step and the
synthetic-data benchmark run without TensorFlow installed.
"""
