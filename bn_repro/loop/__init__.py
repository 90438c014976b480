"""The loop on top: the whole config checked once, periodic work as hooks, train_and_evaluate."""
