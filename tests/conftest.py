"""Shared fixtures: a tiny StereoNet config that runs in milliseconds."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

# Under pytest-xdist each worker takes its share of the cores, so parallel workers do not
# oversubscribe them (torch and OpenMP would otherwise each start one thread per core).
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // _WORKERS)))

TINY = {
    "name": "tiny",
    "model": {
        "maxdisp": 64,
        "refine_levels": 4,
        "neck": {"out_channels": [8, 8, 8, 16, 16, 8], "num_blocks": [1, 1, 1, 1]},
        "head": {"num_groups": 4, "agg_channels": 8, "agg_layers": 1},
        "refinement": {"channels": 8, "num_blocks": 1},
    },
    "data": {
        "source": "synthetic",
        "synthetic": {
            "train_count": 8,
            "val_count": 4,
            "height": 64,
            "width": 128,
            "max_disp": 24.0,
        },
        "train_crop": [64, 128],
    },
    "stages": {
        "float": {"epochs": 1, "batch_size": 2, "scheduler": {"warmup_epochs": 0}},
        "calibration": {"batches": 2, "batch_size": 2, "bins": 256},
        "qat": {"epochs": 1, "batch_size": 2},
    },
}


@pytest.fixture
def tiny_config(tmp_path: Path) -> Path:
    """A tiny experiment config file whose runs go under ``tmp_path/runs``."""
    data = {**TINY, "output_dir": str(tmp_path / "runs")}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
def umask_022() -> Iterator[int]:
    """Umask 0o022 during the test (restored after); yields the mode new files get (0o644)."""
    old = os.umask(0o022)
    try:
        yield 0o644
    finally:
        os.umask(old)
