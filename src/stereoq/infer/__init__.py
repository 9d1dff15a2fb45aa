"""Inference on rectified pairs: disparity, depth, pictures and point clouds."""
