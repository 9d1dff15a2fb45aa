import json
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from stereoq.deploy.backends import get_backend
from stereoq.deploy.compile import compile_stage, validate
from stereoq.deploy.metadata import DeployMetadata
from stereoq.deploy.onnx_export import stage_graph
from stereoq.deploy.ort_runner import postprocess
from stereoq.errors import StereoqError

# Runs the artifact's own script with stereoq and torch made unimportable.
FRESH = (
    "import sys, runpy; sys.modules['stereoq'] = None; sys.modules['torch'] = None; "
    "sys.argv = ['run_stereo.py'] + sys.argv[1:]; "
    "runpy.run_path({script!r}, run_name='__main__')"
)


@pytest.fixture(scope="module")
def compiled(deploy_cfg, float_export):  # noqa: ANN201
    result = compile_stage(deploy_cfg, "float", "ort", 64, 128, runs=3, warmup=1, threads=1,
                           top=5)
    result.commit()
    return result


def test_compile_writes_artifact_and_performance_report(compiled, float_export) -> None:
    out = compiled.artifact_dir
    assert sorted(p.name for p in out.iterdir()) == ["metadata.json", "model.onnx",
                                                     "report.json", "run_stereo.py"]
    meta = DeployMetadata.model_validate_json((out / "metadata.json").read_text())
    assert meta == float_export.metadata
    assert DeployMetadata.from_onnx(onnx.load(str(out / "model.onnx"))) == meta
    perf = compiled.performance
    assert len(perf["latency_ms"]) == 3 and perf["runs"] == 3 and perf["threads"] == 1
    assert 0 < perf["median_ms"] <= perf["p90_ms"] <= max(perf["latency_ms"])
    assert perf["fps"] == pytest.approx(1000 / perf["median_ms"])
    assert perf["peak_rss_mib"] > perf["rss_before_session_mib"] > 0
    top = perf["top_layers"]
    assert len(top) == 5 and all(r["ms"] >= 0 for r in top)
    assert [r["ms"] for r in top] == sorted((r["ms"] for r in top), reverse=True)
    assert any(r["scope"].startswith("model.") for r in top)
    assert compiled.export is None  # the session's export was reused
    report = compiled.to_json()
    assert report["backend"] == "ort" and report["metadata"]["stage"] == "float"


def test_artifact_runs_in_a_fresh_process_without_stereoq_or_torch(
    compiled, deploy_cfg, tmp_path: Path
) -> None:
    x = torch.rand(1, 6, 64, 128) * 2 - 1
    np.save(tmp_path / "x.npy", x.numpy())
    script = str(compiled.artifact_dir / "run_stereo.py")
    cmd = [sys.executable, "-c", FRESH.format(script=script), str(compiled.artifact_dir),
           "predict", str(tmp_path / "x.npy"), str(tmp_path / "d.npy")]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    got = np.load(tmp_path / "d.npy")
    with torch.no_grad():
        half, offset = stage_graph(deploy_cfg, "float")(x)
    ref = postprocess(half.numpy(), offset.numpy(), deploy_cfg.model.maxdisp)
    assert got.shape == (1, 1, 64, 128)
    np.testing.assert_allclose(got, ref, atol=1e-3)


def test_validate_reports_both_models_and_their_agreement(compiled, deploy_cfg) -> None:
    v = validate(deploy_cfg, get_backend("ort"), compiled.artifact_dir, compiled.metadata, 2)
    assert v["samples"] == 2 and v["stage"] == "float"
    assert v["deployed"]["images"] == 2 and v["deployed"]["pixels"] > 0
    assert v["deployed"]["epe"] == pytest.approx(v["reference"]["epe"], abs=1e-3)
    agr = v["agreement"]
    assert agr["disparity_within_step_pct"] == 100.0 and agr["disparity_max_abs_px"] < 1e-2
    assert all(o["within_step_pct"] == 100.0 for o in agr["outputs"].values())
    json.dumps(v)


def test_validation_frames_larger_than_the_artifact_are_refused(deploy_cfg, compiled) -> None:
    small = compiled.metadata.model_copy(update={"input_shape": [1, 6, 48, 128]})
    with pytest.raises(StereoqError, match="larger than the artifact's 48x128"):
        validate(deploy_cfg, get_backend("ort"), compiled.artifact_dir, small, 1)


# compile_stage killed (kill -9) after the build, while measuring: report.json not yet written.
KILLED_COMPILE = """
import os, signal, sys
from pathlib import Path
import stereoq.deploy.compile as compile_mod
from stereoq.deploy.backends.ort import OrtBackend
from stereoq.settings import load_config
compile_mod.artifact_dir = lambda cfg, backend: Path(sys.argv[2])
OrtBackend.benchmark = lambda self, *a, **k: os.kill(os.getpid(), signal.SIGKILL)
compile_mod.compile_stage(load_config(sys.argv[1]), "float", "ort", 64, 128)
"""


def test_interrupted_compile_leaves_the_previous_artifact_whole(
    deploy_config, deploy_cfg, float_export, tmp_path: Path, monkeypatch
) -> None:
    import stereoq.deploy.compile as compile_mod
    from stereoq.deploy.backends.ort import OrtBackend

    deploy = tmp_path / "deploy"
    monkeypatch.setattr(compile_mod, "artifact_dir", lambda cfg, backend: deploy / backend)
    kwargs = {"runs": 1, "warmup": 0, "threads": 1, "top": 3}
    first = compile_stage(deploy_cfg, "float", "ort", 64, 128, **kwargs)
    assert not (deploy / "ort").exists()  # staged only, until commit
    report = first.commit()
    assert report == deploy / "ort" / "report.json"
    before = {p.name: p.read_bytes() for p in (deploy / "ort").iterdir()}
    assert "report.json" in before

    done = subprocess.run([sys.executable, "-c", KILLED_COMPILE, str(deploy_config),
                           str(deploy / "ort")], capture_output=True, text=True, timeout=300)
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert len(list(deploy.iterdir())) == 2  # the old artifact and the killed run's staging
    assert {p.name: p.read_bytes() for p in (deploy / "ort").iterdir()} == before

    with monkeypatch.context() as m:  # a failing run removes its own staging folder
        def fail(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            raise StereoqError("benchmark failed")

        m.setattr(OrtBackend, "benchmark", fail)
        with pytest.raises(StereoqError, match="benchmark failed"):
            compile_stage(deploy_cfg, "float", "ort", 64, 128, **kwargs)
    assert {p.name: p.read_bytes() for p in (deploy / "ort").iterdir()} == before

    with compile_stage(deploy_cfg, "float", "ort", 64, 128, **kwargs) as second:
        pass  # not committed: discarded
    assert second.staged_dir is None
    assert {p.name: p.read_bytes() for p in (deploy / "ort").iterdir()} == before

    with compile_stage(deploy_cfg, "float", "ort", 64, 128, **kwargs) as third:
        third.commit({"validation": "added by the caller"})
    assert [p.name for p in deploy.iterdir()] == ["ort"]
    assert json.loads(report.read_text()) == {"validation": "added by the caller"}
    assert sorted(p.name for p in (deploy / "ort").iterdir()) == sorted(before)
