"""The integer model through deployment: calibration -> int_infer -> export -> check ->
compile --validate, on a tiny model (float weights seeded, not trained)."""

from pathlib import Path

import pytest
import yaml

from stereoq.deploy.check import INT8


@pytest.mark.slow
def test_int_infer_exports_runs_int8_convs_and_matches_after_compile(
    tmp_path: Path,
) -> None:
    import torch

    from stereoq.deploy.backends import get_backend
    from stereoq.deploy.check import check_stage
    from stereoq.deploy.compile import compile_stage, validate
    from stereoq.engine.checkpoint import save_checkpoint
    from stereoq.engine.loop import run_stage
    from stereoq.models.build import build_model
    from stereoq.settings import load_config

    from .conftest import DEPLOY_TINY

    data = {**DEPLOY_TINY, "output_dir": str(tmp_path / "runs"),
            "stages": {"calibration": {"batches": 2, "batch_size": 1, "bins": 256},
                       "int_infer": {"source": "calibration"}}}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(data))
    cfg = load_config(str(path))
    torch.manual_seed(0)
    save_checkpoint(cfg.run_dir / "float" / "best.pt",
                    {"model": build_model(cfg.model).state_dict()})
    run_stage(cfg, "calibration")
    run_stage(cfg, "int_infer")

    report = check_stage(cfg, "int_infer", "ort", 64, 128)
    export = cfg.run_dir / "deploy" / "stereonet_int_infer.onnx"
    assert export.is_file()  # exported with ORT agreement on >= 99.9 % within one step
    int_convs, convs = report.conv_summary()
    assert convs == 35 and int_convs >= 26
    # only the disparity path (int16 by design) computes in float among the convolutions
    float_convs = [n for n in report.nodes if "Conv" in n.op_type and n.precision != INT8]
    assert all("int16" in n.reason for n in float_convs)

    result = compile_stage(cfg, "int_infer", "ort", 64, 128, runs=2, warmup=0, threads=1)
    assert result.metadata.precision == "int8-qdq"
    v = validate(cfg, get_backend("ort"), result.artifact_dir, result.metadata)
    agr = v["agreement"]
    assert v["samples"] == 3
    assert agr["disparity_within_step_pct"] >= 99.0
    assert v["deployed"]["epe"] == pytest.approx(v["reference"]["epe"], rel=0.05)
