"""Stereo data: SceneFlow and generated scenes, LMDB packing, the input pipeline."""

from stereoq.data.datasets import build_dataset

__all__ = ["build_dataset"]
