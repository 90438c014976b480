"""Training's parts: the recipe built from a config, the train and eval steps, the optimizer,
the state, checkpoints, durations and metric writers (the loop that runs them is loop/)."""
