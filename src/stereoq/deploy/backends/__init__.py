"""Named deployment backends: one module each, registered by name, imported on first use.

A backend turns the exported ONNX graph into something that runs on a target, says which
precision every op runs in there (``check``), builds the deployable artifact (``compile``),
measures it (``benchmark``) and runs it for validation (``load``). Adding a target (TensorRT,
OpenVINO) is one more module that registers a ``Backend`` subclass and one line in ``MODULES``.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from stereoq.deploy.check import CheckReport
from stereoq.deploy.metadata import DeployMetadata
from stereoq.errors import StereoqError
from stereoq.registry import Registry

BACKENDS = Registry("backend")

MODULES = {"ort": "stereoq.deploy.backends.ort"}
"""Backend name -> module that registers it (imported lazily: runtimes are heavy)."""

RawRunner = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
"""(1, 6, H, W) float32 normalised pair -> (disparity_half, offset), normalised."""


class Backend(ABC):
    """A deployment target fed with the stage's ONNX file (float or int8 QDQ)."""

    name: ClassVar[str]
    description: ClassVar[str]

    @abstractmethod
    def check(self, onnx_path: Path) -> CheckReport:
        """Every node of the graph as the runtime optimizes and runs it, with its precision."""

    @abstractmethod
    def compile(self, onnx_path: Path, metadata: DeployMetadata, out_dir: Path) -> Path:
        """Write the deployable artifact into ``out_dir`` (replaced atomically); returns it."""

    @abstractmethod
    def benchmark(
        self,
        artifact_dir: Path,
        runs: int,
        warmup: int,
        threads: int | None,
        top: int,
        scopes: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """Latency (median, p90), peak memory and the ``top`` costliest layers, measured in a
        fresh process that loads only the artifact; ``scopes`` maps source node names to
        PyTorch modules for the layer table."""

    @abstractmethod
    def load(self, artifact_dir: Path, threads: int | None = None) -> RawRunner:
        """The artifact as a function of the normalised input (for validation)."""


def backend_names() -> list[str]:
    return sorted(MODULES)


def get_backend(name: str) -> Backend:
    """The backend registered as ``name``; a one-line option error if there is none."""
    if name not in MODULES:
        raise StereoqError(
            f"option --backend: unsupported backend {name!r} (available: "
            f"{', '.join(backend_names())})",
            exit_code=2,
        )
    importlib.import_module(MODULES[name])
    return BACKENDS.build(name)
