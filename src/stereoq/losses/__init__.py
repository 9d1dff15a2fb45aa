"""Losses that need no ground truth: photometric reconstruction, edge-aware smoothness, their
sum with proxy labels (adaptation), and distillation from a float teacher (label-free QAT)."""
