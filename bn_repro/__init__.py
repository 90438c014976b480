"""bn_repro: Batch Normalization (Ioffe & Szegedy, 2015) reproduced with BN-Inception in JAX.

The modules and sub-packages are the layers, lowest first. A module imports its own folder and
lower layers only, never a higher layer nor a neighbour on its own floor (errors, files,
faults and host share one floor; so do models and data, workdir and cli, research and benchmarks).
tests/test_structure.py checks it, function-local imports included:

- errors       one-line user errors and config-field checks
- files        local and gs:// files through one interface
- faults       named points where the crash tests kill or signal the process
- host         the machine's CPU as results record it
- parallel/    the device map (one named axis), multi-process start-up, a local launcher
- models/      the BN layer (Algorithm 1, EMA and population statistics) and the networks
- data/        datasets, tf.data pipelines, multi-crop geometry, on-device preprocessing
- workdir      every file of a run's directory, its lock and identity check
- cli          what every script shares: flags, start-up, one-line errors
- training/    the recipe (model, schedule, optimizer, state, train and eval steps), checkpoints
- evaluation/  exact evaluation, population statistics (Algorithm 2), the ICS probe, workdir
               evaluations, ensembles
- loop/        train_and_evaluate: the config check, periodic hooks, the loop itself
- research/    the small-scale reproduction: plan, tables, plots, report
- benchmarks/  speed measurements
"""
