"""Inference on rectified pairs: disparity, depth, pictures and point clouds."""

DEPLOYED = "deployed"
"""The model source beside the pipeline's stages: the artifact ``stereoq compile`` installed."""
