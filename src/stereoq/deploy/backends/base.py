"""The interface every deployment backend implements, and what it builds from."""

from __future__ import annotations

import json
import os
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from stereoq.deploy.acceptance import DEFAULT, Thresholds
from stereoq.deploy.check import CheckReport
from stereoq.deploy.metadata import DeployMetadata
from stereoq.errors import StereoqError
from stereoq.registry import Registry
from stereoq.settings.config import ExperimentConfig
from stereoq.tethered import run_script

BACKENDS = Registry("backend")

RawRunner = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
"""(1, 6, H, W) float32 normalised pair -> (disparity_half, offset), normalised."""


@dataclass
class StageSource:
    """What a backend builds from: the stage's graph file at one size, and its contract."""

    path: Path
    metadata: DeployMetadata
    export: Any = None
    """The ``ExportResult`` when an ONNX export was (re)made for this call."""


class Backend(ABC):
    """A deployment target fed with the stage's graph file: ``consumes`` names which one.

    ``"onnx"`` (the default): the stage's ONNX file (float or int8 QDQ) at the deployment size,
    exported when missing or stale. A backend that consumes another artifact overrides
    ``stage_source`` (and ``scopes``); every other method receives that source's path.
    """

    name: ClassVar[str]
    description: ClassVar[str]
    consumes: ClassVar[str] = "onnx"
    thresholds: ClassVar[Thresholds] = DEFAULT
    """What ``compile --validate`` asks of the artifact against the PyTorch model: the default
    for runtimes that compute the integer model's roundings (``stereoq.deploy.acceptance``)."""
    profiler: ClassVar[str] = "layers (the runtime's profiler)"
    """What ``benchmark``'s top table ranks and whose figures they are (the CLI's title)."""
    model_file: ClassVar[str] = "model.onnx"
    """The model file inside the artifact folder."""

    def stage_source(
        self, cfg: ExperimentConfig, stage: str, height: int, width: int, strict: bool = False
    ) -> StageSource:
        """The graph file this backend builds ``stage`` from at ``height`` x ``width``
        (``strict``: a fresh export verified bit by bit, see ``export_stage``)."""
        from stereoq.deploy.onnx_export import read_metadata, stage_onnx

        path, exported = stage_onnx(cfg, stage, height, width, strict)
        metadata = read_metadata(path)
        if metadata is None:
            raise StereoqError(f"{path} has no stereoq metadata; export it with stereoq export")
        return StageSource(path, metadata, exported)

    def scopes(self, source: Path) -> dict[str, str]:
        """Source node name -> PyTorch module, for the layer table."""
        import onnx

        from stereoq.deploy.qdq_graph import node_scopes

        return node_scopes(onnx.load(str(source)))

    @abstractmethod
    def check(self, source: Path) -> CheckReport:
        """Every node of the graph as the runtime optimizes and runs it, with its precision."""

    @abstractmethod
    def compile(self, source: Path, metadata: DeployMetadata, out_dir: Path) -> Path:
        """Write the deployable artifact's files into the folder ``out_dir`` (made if missing);
        returns it. ``compile_stage`` passes an empty staging folder that it swaps in whole
        once the artifact is measured and its report written."""

    @abstractmethod
    def benchmark(
        self,
        artifact_dir: Path,
        runs: int,
        warmup: int,
        threads: int | None,
        top: int,
        scopes: dict[str, str] | None = None,
        profile_runs: int = 3,
    ) -> dict[str, Any]:
        """Latency (median, p90), peak memory and the ``top`` costliest layers, measured in a
        fresh process that loads only the artifact; ``scopes`` maps source node names to
        PyTorch modules for the layer table; ``profile_runs``: runs under the runtime's
        profiler that the layer times are averaged over."""

    @abstractmethod
    def load(self, artifact_dir: Path, threads: int | None = None) -> RawRunner:
        """The artifact as a function of the normalised input (for validation)."""

    def runner(self, artifact_dir: Path, threads: int | None = None) -> Any:
        """The artifact's own runner (the ``StereoRunner`` of its ``run_stereo.py``:
        ``metadata``, ``input_shape``, ``raw``, ``predict``), for ``infer --stage deployed``."""
        raise StereoqError(f"the {self.name} backend's artifacts cannot run in stereoq infer")


def run_artifact_bench(artifact_dir: Path, script: str, args: list[str]) -> dict[str, Any]:
    """Run the artifact's own runner script (``bench`` mode) in a fresh Python process and
    return the JSON result it prints last; a one-line error if the run fails. The process is
    tethered to this one (``stereoq.tethered``): killing ``compile`` ends the benchmark too."""
    env = {**os.environ, "PYTHONNOUSERSITE": "1"}
    done = run_script(str(Path(artifact_dir) / script), [str(artifact_dir), "bench", *args], env)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise StereoqError(f"benchmark of {artifact_dir} failed: {last}")
    return json.loads(done.stdout.strip().splitlines()[-1])
