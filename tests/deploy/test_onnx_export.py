import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from stereoq.deploy.metadata import DeployMetadata
from stereoq.deploy.onnx_export import (
    OPSET,
    compare,
    default_size,
    export_stage,
    read_metadata,
)
from stereoq.errors import StereoqError


def test_float_export_passes_checker_and_matches_pytorch(float_export, deploy_cfg) -> None:
    path = float_export.path
    assert path == deploy_cfg.run_dir / "deploy" / "stereonet_float.onnx" and path.is_file()
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    assert model.opset_import[0].version == OPSET
    assert [i.name for i in model.graph.input] == ["input"]
    assert [o.name for o in model.graph.output] == ["disparity_half", "offset"]
    agreement = float_export.agreement
    assert agreement.ok and not agreement.quantized and agreement.samples == 3
    assert max(agreement.max_abs.values()) < 1e-4
    # the verdict a user cares about: same disparity, same scores against ground truth
    accepted = float_export.disparity
    assert accepted.ok and accepted.frames == 3 and accepted.within_pct == 100.0
    assert accepted.deployed["epe"] == pytest.approx(accepted.reference["epe"], abs=1e-4)
    assert float_export.to_json()["acceptance"]["ok"] is True
    assert "QuantizeLinear" not in float_export.op_counts and float_export.op_counts["Conv"] > 0
    # no temp files left next to the export
    assert sorted(p.name for p in path.parent.iterdir() if p.name.startswith(".")) == []


def test_metadata_documents_the_input_and_post_processing(float_export, deploy_cfg) -> None:
    meta = read_metadata(float_export.path)
    assert isinstance(meta, DeployMetadata) and meta == float_export.metadata
    assert meta.input_shape == [1, 6, 64, 128] and meta.input_name == "input"
    assert meta.color == "yuv444" and (meta.mean, meta.std) == (128.0, 128.0)
    assert meta.maxdisp == 64 and meta.size_multiple == 16 and meta.precision == "float32"
    assert [o.shape for o in meta.outputs] == [[1, 1, 32, 64], [1, 1, 64, 128]]
    assert "maxdisp" in meta.postprocess and "align_corners=False" in meta.postprocess
    props = {p.key for p in onnx.load(str(float_export.path)).metadata_props}
    assert {"stereoq.input_shape", "stereoq.normalisation", "stereoq.maxdisp"} <= props


def test_another_versions_metadata_is_a_one_line_error_and_a_stale_cache(
    float_export, deploy_cfg, tmp_path: Path
) -> None:
    from stereoq.deploy.onnx_export import stage_onnx

    assert float_export.metadata.float_convs == []  # a float graph has no integer kernels
    model = onnx.load(str(float_export.path))
    model.metadata_props.add(key="stereoq.future_field", value="1")
    odd = tmp_path / "odd.onnx"
    onnx.save(model, str(odd))
    with pytest.raises(StereoqError, match="future_field") as err:
        read_metadata(odd)
    assert str(odd) in str(err.value) and "\n" not in str(err.value)
    # the deploy commands' cached export of that kind is made again, not read
    cached = deploy_cfg.run_dir / "deploy" / "stereonet_float.onnx"
    clean = cached.read_bytes()
    try:
        cached.write_bytes(odd.read_bytes())
        path, result = stage_onnx(deploy_cfg, "float", 64, 128)
        assert path == cached and result is not None and read_metadata(cached) is not None
    finally:
        cached.write_bytes(clean)


def test_default_size_rounds_validation_frames_up(deploy_cfg) -> None:
    assert default_size(deploy_cfg) == (64, 128)  # frames are 60x120


def test_default_size_of_packed_data_comes_from_its_frames(deploy_cfg, monkeypatch) -> None:
    import stereoq.data

    cfg = deploy_cfg.model_copy(
        update={"data": deploy_cfg.data.model_copy(update={"source": "lmdb"})}
    )
    monkeypatch.setattr(
        stereoq.data, "build_dataset", lambda *a, **k: [{"left": torch.zeros(3, 100, 200)}]
    )
    assert default_size(cfg) == (112, 208)

    def unreadable(*a, **k):
        raise StereoqError("no packed data")

    monkeypatch.setattr(stereoq.data, "build_dataset", unreadable)
    assert default_size(cfg) == (544, 960)


def test_size_not_a_multiple_is_an_option_error(deploy_cfg) -> None:
    with pytest.raises(StereoqError, match="--width: 120 is not a positive multiple of 16") as e:
        export_stage(deploy_cfg, "float", 64, 120)
    assert e.value.exit_code == 2


def test_missing_stage_model_names_the_file(deploy_cfg, tmp_path: Path) -> None:
    cfg = deploy_cfg.model_copy(update={"output_dir": tmp_path})
    with pytest.raises(StereoqError, match=r"float[/\\]best.pt does not exist.*stereoq train"):
        export_stage(cfg, "float", 64, 128)
    assert not (tmp_path / "tiny_deploy" / "deploy" / "stereonet_float.onnx").exists()


def test_int8_agreement_counts_elements_within_one_step() -> None:
    ref = [(np.zeros((1, 1, 10, 10), np.float32), np.zeros((1, 1, 20, 100), np.float32))]
    got_half = ref[0][0].copy()
    got_half[0, 0, 0, 0] = 0.02  # two steps off: one element in 100
    got_offset = ref[0][1] + 0.0099  # within one step everywhere
    a = compare([(got_half, got_offset)], ref, {"disparity_half": 0.01, "offset": 0.01}, True)
    assert a.within_pct["disparity_half"] == pytest.approx(99.0)
    assert a.within_pct["offset"] == 100.0
    assert not a.ok  # 99.0 % < 99.9 %
    relaxed = compare([(got_half, got_offset)], ref, {"disparity_half": 0.01, "offset": 0.01},
                      True, min_int_pct=98.0)
    assert relaxed.ok and relaxed.to_json()["required_pct"] == 98.0
    got_offset[0, 0, 0, 0] = 1.0
    b = compare([(ref[0][0], got_offset)], ref, {"disparity_half": 0.01, "offset": 0.01}, True)
    assert b.ok and b.within_pct["offset"] == pytest.approx(99.95)
    assert b.max_abs["offset"] == pytest.approx(1.0)


def test_float_agreement_needs_every_element() -> None:
    x = torch.rand(1, 1, 4, 4).numpy()
    ok = compare([(x, x + 5e-5)], [(x, x)], {}, False)
    bad = compare([(x, x + 1e-2)], [(x, x)], {}, False)
    assert ok.ok and not bad.ok and bad.within_pct["offset"] == 0.0


def test_export_removes_temps_of_killed_exports_but_not_live_ones(
    deploy_cfg, tmp_path: Path
) -> None:
    """A ``kill -9``-ed export leaves its temp file; the next export into the folder removes it,
    and leaves the temp of an export still running elsewhere alone."""
    from stereoq.staging import owner

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        out = tmp_path / "stereonet_float.onnx"
        killed = tmp_path / f".stereonet_float.{owner(dead.pid)}.a1b2c3d4.onnx"
        running = tmp_path / f".stereonet_float.{owner(live.pid)}.e5f6g7h8.onnx"
        killed.write_bytes(b"half an onnx file")
        running.write_bytes(b"being written")

        export_stage(deploy_cfg, "float", 64, 128, out)

        assert sorted(p.name for p in tmp_path.iterdir()) == sorted([out.name, running.name])
        assert read_metadata(out) is not None
    finally:
        live.kill()
        live.wait()
