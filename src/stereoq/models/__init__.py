"""StereoNet and its registered parts (importing this package registers them)."""

from stereoq.models import head, loss, neck, postprocess, refinement
from stereoq.models.stereonet import DeployGraph, StereoNet

__all__ = ["DeployGraph", "StereoNet", "head", "loss", "neck", "postprocess", "refinement"]
