"""Training: the recipe built from a config, the train step, checkpoints, periodic hooks, the loop."""
