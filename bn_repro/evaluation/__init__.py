"""Evaluation: exact counting over a split, population statistics (Algorithm 2), evaluations of
trained workdirs with 1/10/144 crops, and ensembles."""
