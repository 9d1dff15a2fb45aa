"""The integer model through deployment: calibration -> int_infer -> export -> check ->
compile --validate, on a tiny model (float weights seeded, not trained)."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from stereoq.deploy.check import INT8
from stereoq.deploy.onnx_export import (
    compare,
    export_stage,
    reference_graph,
    run_torch,
    stage_graph,
    verification_inputs,
)

from .test_compile import FRESH


@pytest.mark.slow
def test_int_infer_exports_runs_int8_convs_and_matches_after_compile(
    int_run: Path, tmp_path: Path,
) -> None:
    from stereoq.deploy.backends import get_backend
    from stereoq.deploy.compile import check_stage, compile_stage, validate

    from .conftest import int_run_copy

    cfg = int_run_copy(int_run, tmp_path)  # calibration -> int_infer done (conftest)

    exported = export_stage(cfg, "int_infer", 64, 128).agreement
    # outputs within one step of PyTorch's integer model and every quantized tensor within one
    # LSB given the same inputs, on >= 99.9 %; the convolutions agree to the bit
    assert exported.ok and exported.outputs_ok and len(exported.tensors) > 50
    assert min(exported.within_pct.values()) >= 99.9
    convs = [t for t in exported.tensors if t.scope and t.dtype == "uint8"]
    assert convs and all(t.exact_pct == 100.0 for t in convs)
    assert {t.dtype for t in exported.tensors} == {"uint8", "int16"}
    report = check_stage(cfg, "int_infer", "ort", 64, 128)  # reuses the fresh export
    export = cfg.run_dir / "deploy" / "stereonet_int_infer.onnx"
    assert export.is_file()
    int_convs, convs = report.conv_summary()
    assert convs == 35 and int_convs >= 26
    # only the disparity path (int16 by design) computes in float among the convolutions
    float_convs = [n for n in report.nodes if "Conv" in n.op_type and n.precision != INT8]
    assert all("int16" in n.reason for n in float_convs)
    assert report.warnings == []  # 7-bit weights: no pair sum saturates on any CPU

    result = compile_stage(cfg, "int_infer", "ort", 64, 128, runs=2, warmup=0, threads=1)
    result.commit()
    assert result.metadata.precision == "int8-qdq"

    # the artifact alone, in a process where stereoq and torch cannot be imported
    x = verification_inputs(cfg, 64, 128)[0]
    np.save(tmp_path / "x.npy", x.numpy())
    script = str(result.artifact_dir / "run_stereo.py")
    cmd = [sys.executable, "-c", FRESH.format(script=script), str(result.artifact_dir),
           "predict", "--raw", str(tmp_path / "x.npy"), str(tmp_path / "raw.npz")]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    raw = np.load(tmp_path / "raw.npz")
    got = [(raw["disparity_half"], raw["offset"])]
    steps = {o.name: o.agreement_step for o in result.metadata.outputs}
    reference = reference_graph(stage_graph(cfg, "int_infer"))
    agreement = compare(got, run_torch(reference, [x]), steps, True)
    assert agreement.ok, agreement.summary()
    v = validate(cfg, get_backend("ort"), result.artifact_dir, result.metadata)
    agr = v["agreement"]
    assert v["samples"] == 3
    assert agr["disparity_within_step_pct"] >= 99.9
    assert v["deployed"]["epe"] == pytest.approx(v["reference"]["epe"], rel=0.05)
