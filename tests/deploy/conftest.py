"""A tiny experiment with a float checkpoint (random weights), exported once per session."""

from __future__ import annotations

import fcntl
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from stereoq.settings.config import ExperimentConfig

DEPLOY_TINY = {
    "name": "tiny_deploy",
    "model": {
        "maxdisp": 64,
        "refine_levels": 4,
        "neck": {"out_channels": [8, 8, 8, 16, 16, 8], "num_blocks": [1, 1, 1, 1]},
        "head": {"num_groups": 4, "agg_channels": 8, "agg_layers": 1},
        "refinement": {"channels": 8, "num_blocks": 1},
    },
    "data": {
        "source": "synthetic",
        "synthetic": {"train_count": 4, "val_count": 3, "height": 60, "width": 120,
                      "max_disp": 24.0},
        "train_crop": [48, 96],
    },
}


@pytest.fixture(scope="session")
def deploy_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Config file of a run whose float stage exists (a seeded, untrained checkpoint).

    Validation frames are 60x120, so the default deployment size is 64x128 (padding needed).
    """
    from stereoq.engine.checkpoint import save_checkpoint
    from stereoq.models.build import build_model
    from stereoq.settings import load_config

    root = tmp_path_factory.mktemp("deploy")
    path = root / "tiny.yaml"
    path.write_text(yaml.safe_dump({**DEPLOY_TINY, "output_dir": str(root / "runs")}))
    cfg = load_config(str(path))
    torch.manual_seed(0)
    model = build_model(cfg.model)
    save_checkpoint(cfg.run_dir / "float" / "best.pt", {"model": model.state_dict()})
    return path


@pytest.fixture(scope="session")
def deploy_cfg(deploy_config: Path) -> ExperimentConfig:
    from stereoq.settings import load_config

    return load_config(str(deploy_config))


@pytest.fixture(scope="session")
def float_export(deploy_cfg: ExperimentConfig):  # noqa: ANN201
    from stereoq.deploy.onnx_export import export_stage

    return export_stage(deploy_cfg, "float", 64, 128)


INT_STAGES = {"calibration": {"batches": 2, "batch_size": 1, "bins": 256},
              "int_infer": {"source": "calibration"}}


@pytest.fixture(scope="session")
def int_run(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> Path:
    """The tiny run with calibration and int_infer (from calibration) done: its runs folder.

    Built once per test session, whichever worker asks first (the others wait on a lock):
    the three modules that take the integer model through a backend would each spend half a
    minute on the same two stages. Tests write into their own copy (``int_run_copy``).
    """
    from stereoq.engine.checkpoint import save_checkpoint
    from stereoq.models.build import build_model
    from stereoq.stages import run_stage

    base = tmp_path_factory.getbasetemp()
    shared = base.parent if worker_id != "master" else base
    root = shared / "int_run"
    with open(shared / "int_run.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (root / "complete").is_file():
            shutil.rmtree(root, ignore_errors=True)
            root.mkdir(parents=True)
            cfg = _int_config(root)
            torch.manual_seed(0)
            save_checkpoint(cfg.run_dir / "float" / "best.pt",
                            {"model": build_model(cfg.model).state_dict()})
            run_stage(cfg, "calibration")
            run_stage(cfg, "int_infer")
            (root / "complete").write_text("")
    return root / "runs"


def int_run_copy(int_run: Path, dest: Path) -> ExperimentConfig:
    """A copy of ``int_run`` under ``dest`` (times kept) and its config."""
    shutil.copytree(int_run, dest / "runs")
    return _int_config(dest)


def _int_config(root: Path) -> ExperimentConfig:
    """The integer run's config, written as ``root/tiny.yaml`` with its runs in ``root/runs``."""
    from stereoq.settings import load_config

    path = root / "tiny.yaml"
    path.write_text(yaml.safe_dump({**DEPLOY_TINY, "output_dir": str(root / "runs"),
                                    "stages": INT_STAGES}))
    return load_config(str(path))
