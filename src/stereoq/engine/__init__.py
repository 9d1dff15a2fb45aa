"""Training and evaluation: one loop for every training stage, metrics, checkpoints."""
