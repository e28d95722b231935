"""The trainer of AtomoVideo motion modules: config, frozen base, data, objective, checkpoints, train loop."""
