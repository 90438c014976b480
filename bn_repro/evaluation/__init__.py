"""Evaluation: exact counting over a split, population statistics (Algorithm 2), the
internal-covariate-shift probe, evaluations of trained workdirs with 1/10/144 crops, and
ensembles."""
