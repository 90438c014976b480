"""bn_repro: Batch Normalization (Ioffe & Szegedy, 2015) reproduced with BN-Inception in JAX.

The sub-packages are the layers, lowest first; each imports only from the ones above it in this list:

- parallel/    the device map (one named axis), multi-process start-up, a local launcher
- models/      the BN layer (Algorithm 1, EMA and population statistics) and the networks
- data/        datasets, tf.data pipelines, multi-crop geometry, on-device preprocessing
- training/    the recipe (model, schedule, optimizer, state, steps), checkpoints, hooks, the loop
- evaluation/  exact evaluation, population statistics (Algorithm 2), workdir evaluations, ensembles
- research/    the internal-covariate-shift probe, the small-scale reproduction, plots
- benchmarks/  speed measurements

`workdir` owns every file of a run's directory; `errors` the one-line user errors; `cli` what
every script shares.
"""
