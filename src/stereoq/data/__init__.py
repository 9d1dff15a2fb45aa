"""Stereo data: SceneFlow and generated scenes, LMDB packing, the input pipeline."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from stereoq.data.datasets import build_dataset

__all__ = ["build_dataset"]


def __getattr__(name: str) -> Any:
    # Lazy, so that pack workers (which import stereoq.data.pack) start without importing torch.
    if name == "build_dataset":
        from stereoq.data.datasets import build_dataset

        return build_dataset
    raise AttributeError(f"module 'stereoq.data' has no attribute {name!r}")
