"""The multi-task model: simulator, training data, network, training, evaluation, packaging, serving."""
