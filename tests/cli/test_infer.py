"""``stereoq infer`` end to end on a tiny untrained float checkpoint (in process, fast)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from stereoq.engine.checkpoint import save_checkpoint
from stereoq.models.build import build_model
from stereoq.settings import load_config
from stereoq.stages import get_stage

from .conftest import invoke


def write_pair(left: Path, right: Path, height: int = 36, width: int = 50) -> None:
    rng = np.random.default_rng(0)
    wide = rng.integers(0, 256, size=(height, width + 3, 3), dtype=np.uint8)
    for path, img in ((left, wide[:, 3:]), (right, wide[:, :width])):
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), img)


@pytest.fixture
def run(tiny_config: Path, tmp_path: Path) -> dict:
    """A tiny config with a float checkpoint, one pair on disk, and the common options."""
    cfg = load_config(str(tiny_config))
    torch.manual_seed(0)
    state = {"model": build_model(cfg.model).state_dict()}
    save_checkpoint(get_stage(cfg, "float").artifact(), state)
    write_pair(tmp_path / "l.png", tmp_path / "r.png")
    return {"config": str(tiny_config), "left": tmp_path / "l.png", "right": tmp_path / "r.png"}


def test_both_option_forms_give_the_same_result(run, tmp_path, monkeypatch, capsys) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    code, out, err = invoke(
        monkeypatch, capsys, "infer", "-c", run["config"], "--imgl", str(run["left"]),
        "--imgr", str(run["right"]), "--baseline", "0.54", "--f", "1050", "--save-path", str(a),
    )
    assert code == 0, err
    assert "disparity px" in out
    inputs = f"imgl:{run['left']},imgr:{run['right']},baseline:0.54,f:1050"
    code, _, err = invoke(
        monkeypatch, capsys, "infer", "-c", run["config"], "--model-inputs", inputs,
        "--save-path", str(b),
    )
    assert code == 0, err
    assert (a / "disparity.pfm").read_bytes() == (b / "disparity.pfm").read_bytes()
    sa, sb = (json.loads((d / "summary.json").read_text()) for d in (a, b))
    assert sa["camera"] == sb["camera"] == {
        "baseline_m": 0.54, "focal_px": 1050.0, "cx_px": None, "cy_px": None,
        "doffs_px": 0.0, "principal_point": "image centre",
    }
    assert sa["pairs"][0]["disparity_px"] == sb["pairs"][0]["disparity_px"]
    for name in ("disparity.png", "depth.png", "depth_mm.png", "overview.png"):
        assert (a / name).is_file()
    assert not (a / "pointcloud.ply").exists()


def test_explicit_checkpoint_is_used_and_reported(run, tmp_path, monkeypatch, capsys) -> None:
    cfg = load_config(run["config"])
    other = save_checkpoint(tmp_path / "other.pt", {"model": build_model(cfg.model).state_dict()})
    outs = {}
    for name, extra in (("default", []), ("other", ["--checkpoint", str(other)])):
        outs[name] = tmp_path / name
        code, _, err = invoke(
            monkeypatch, capsys, "infer", "-c", run["config"], "--imgl", str(run["left"]),
            "--imgr", str(run["right"]), "--baseline", "1", "--f", "10",
            "--save-path", str(outs[name]), *extra,
        )
        assert code == 0, err
    summary = json.loads((outs["other"] / "summary.json").read_text())
    assert summary["artifact"] == str(other)
    # Different (freshly initialised) weights give a different disparity.
    pfm = [(outs[n] / "disparity.pfm").read_bytes() for n in ("default", "other")]
    assert pfm[0] != pfm[1]


def test_folder_of_pairs_and_ply(run, tmp_path, monkeypatch, capsys) -> None:
    for name in ("x", "y"):
        write_pair(tmp_path / "set/left" / f"{name}.png", tmp_path / "set/right" / f"{name}.png")
    out_dir = tmp_path / "out"
    code, _, err = invoke(
        monkeypatch, capsys, "infer", "-c", run["config"], "--imgl", str(tmp_path / "set"),
        "--baseline", "0.1", "--f", "100", "--save-path", str(out_dir), "--ply", "--cx", "3",
        "--doffs", "2.5",
    )
    assert code == 0, err
    summary = json.loads((out_dir / "summary.json").read_text())
    assert [p["name"] for p in summary["pairs"]] == ["x", "y"]
    assert summary["camera"]["cx_px"] == 3.0
    assert summary["camera"]["doffs_px"] == 2.5
    # The depth written is f * B / (d + doffs) of the disparity written.
    from stereoq.data.pfm import read_pfm

    disp = read_pfm(out_dir / "x" / "disparity.pfm")
    depth_mm = cv2.imread(str(out_dir / "x" / "depth_mm.png"), cv2.IMREAD_UNCHANGED)
    ok = depth_mm > 0
    assert ok.any()
    np.testing.assert_allclose(depth_mm[ok], 1000 * 10.0 / (disp[ok] + 2.5), atol=0.51)
    for name in ("x", "y"):
        assert (out_dir / name / "pointcloud.ply").read_bytes().startswith(b"ply\n")


def test_folder_with_a_bad_pair_never_leaves_a_mixed_output_folder(
    run, tmp_path, monkeypatch, capsys
) -> None:
    """Pair folders are each old-complete or new-complete, and summary.json is never one that
    describes other outputs than the folder holds."""
    import stereoq.infer.run as infer_run

    pairs, out = tmp_path / "set", tmp_path / "out"
    args = ["infer", "-c", run["config"], "--imgl", str(pairs), "--baseline", "0.1", "--f",
            "100", "--save-path", str(out)]

    def put(name: str, height: int = 36, width: int = 50) -> None:
        write_pair(pairs / "left" / f"{name}.png", pairs / "right" / f"{name}.png", height, width)

    def snapshot() -> dict[str, bytes]:
        return {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*") if p.is_file()}

    put("a")
    put("b")
    code, _, err = invoke(monkeypatch, capsys, *args)
    assert code == 0, err
    first = snapshot()
    assert "summary.json" in first and len(first) == 11

    # b unreadable: found before anything is written, a/ included
    put("a", 40, 60)
    (pairs / "right" / "b.png").write_bytes(b"not a png")
    code, _, err = invoke(monkeypatch, capsys, *args)
    assert code == 1
    assert re.search(r"^error: pair b: image .*b\.png: not a readable image; nothing written$",
                     err.strip()), err
    assert snapshot() == first

    # b fails while its outputs are written (a full disk): a/ new, b/ old, no summary
    put("b", 40, 60)
    real = infer_run.write_outputs

    def disk_full(out_dir, *rest):  # noqa: ANN001, ANN002, ANN202
        paths = real(out_dir, *rest)
        if out_dir.name == "b":
            raise OSError(28, "No space left on device", str(paths["overview_png"]))
        return paths

    monkeypatch.setattr(infer_run, "write_outputs", disk_full)
    code, _, err = invoke(monkeypatch, capsys, *args)
    assert code == 1
    assert re.search(r"pair b: cannot write .*out/b: No space left on device; 1 of 2 pair "
                     r"folders written \(each complete\), no summary\.json", err), err
    second = snapshot()
    assert "summary.json" not in second
    assert {k: v for k, v in second.items() if k.startswith("b/")} == {
        k: v for k, v in first.items() if k.startswith("b/")}
    assert second["a/disparity.pfm"] != first["a/disparity.pfm"]
    assert sorted(k for k in second if k.startswith("a/")) == sorted(
        k for k in first if k.startswith("a/"))
    assert sorted(p.name for p in out.iterdir()) == ["a", "b"]  # no staging left behind

    monkeypatch.setattr(infer_run, "write_outputs", real)
    code, _, err = invoke(monkeypatch, capsys, *args)
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text())
    assert [(p["name"], p["height"]) for p in summary["pairs"]] == [("a", 40), ("b", 40)]
    assert summary["pairs"][1]["outputs"]["disparity_pfm"] == str(out / "b" / "disparity.pfm")
    assert sorted(p.name for p in out.iterdir()) == ["a", "b", "summary.json"]


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["--imgl", "{tmp}/missing.png", "--imgr", "{right}"], 1, "--imgl .*missing.png: no such"),
        (["--imgl", "{tmp}/bad.png", "--imgr", "{right}"], 1, "bad.png: not a readable image"),
        (["--imgl", "{left}", "--imgr", "{tmp}/small.png"], 1, "is 50x36 but right .* is 9x7"),
        (["--imgl", "{left}", "--imgr", "{right}", "--baseline", "0"], 2, "--baseline"),
        (["--imgl", "{left}", "--imgr", "{right}", "--f", "-5"], 2, "--f"),
        (["--imgl", "{left}", "--imgr", "{right}", "--baseline", "1e300", "--f", "1e300"], 2,
         "--baseline 1e\\+300 x --f 1e\\+300: depths overflow"),
        (["--model-inputs", "imgl:{left},imgr:{right},baseline:1e30,f:1e30"], 2,
         "depths overflow"),
        (["--imgl", "{left}", "--imgr", "{right}", "--baseline", "inf"], 2, "--baseline"),
        (["--imgl", "{left}", "--imgr", "{right}", "--doffs", "1e300"], 2, "--doffs .*range"),
        (["--imgl", "{left}", "--imgr", "{right}", "--stage", "nope"], 2, "--stage"),
        (["--imgl", "{left}", "--imgr", "{right}", "--stage", "deployed"], 1, "stereoq compile"),
        (["--imgl", "{left}", "--imgr", "{right}", "--stage", "qat"], None, "qat"),
        (["--model-inputs", "imgl:{left},oops"], 2, "--model-inputs .*bad item 'oops'"),
        (["--model-inputs", "imgl:{left},imgr:{right}", "--imgl", "{left}"], 2, "given as --imgl"),
        (["--imgr", "{right}"], 2, "--imgl: missing"),
        (["--imgl", "{left}", "--imgr", "{right}", "--save-path", "{left}"], 2,
         "--save-path .*l.png: exists and is not a folder"),
        (["--imgl", "{left}", "--imgr", "{right}", "--save-path", "{left}/sub"], 1,
         "cannot write .*l.png/sub: Not a directory"),
        (["--imgl", "{left}", "--imgr", "{right}", "--checkpoint", "{tmp}/no.pt"], 1,
         "checkpoint .*no.pt does not exist"),
        (["--imgl", "{left}", "--imgr", "{right}", "--stage", "qat", "--checkpoint", "{left}"],
         2, "--checkpoint: only the float stage"),
    ],
)
def test_bad_input_is_one_line_and_non_zero(
    run, tmp_path, monkeypatch, capsys, args: list[str], code: int | None, message: str
) -> None:
    (tmp_path / "bad.png").write_bytes(b"not a png")
    cv2.imwrite(str(tmp_path / "small.png"), np.zeros((7, 9, 3), np.uint8))
    fill = {"tmp": str(tmp_path), "left": str(run["left"]), "right": str(run["right"])}
    args = [a.format(**fill) for a in args]
    defaults = {"--baseline": "0.5", "--f": "500", "--save-path": str(tmp_path / "o")}
    if "--model-inputs" in args:
        defaults = {"--save-path": str(tmp_path / "o")}
    for key, value in defaults.items():
        if key not in args:
            args += [key, value]
    got, out, err = invoke(monkeypatch, capsys, "infer", "-c", run["config"], *args)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert got != 0 and (code is None or got == code), err
    assert len(lines) == 1 and "Traceback" not in err, err
    assert re.search(message, lines[0]), lines[0]
    assert not (tmp_path / "o" / "summary.json").exists()


def test_console_script_error_has_no_traceback(tmp_path: Path) -> None:
    res = subprocess.run(
        [sys.executable, "-m", "stereoq", "infer", "--imgl", str(tmp_path / "nope.png"),
         "--imgr", str(tmp_path / "nope2.png"), "--baseline", "0.5", "--f", "500",
         "--save-path", str(tmp_path / "o")],
        capture_output=True, text=True, timeout=120,
    )
    assert res.returncode == 1
    assert "Traceback" not in res.stderr and "nope.png: no such file" in res.stderr


@pytest.mark.parametrize(
    ("height", "width"), [(1, 1), (160, 1), (1, 96)], ids=["1x1", "1x160", "96x1"]
)
def test_tiny_and_thin_images_run_at_their_own_size(
    run, tmp_path, monkeypatch, capsys, height: int, width: int
) -> None:
    from stereoq.data.pfm import read_pfm

    left, right = tmp_path / "tl.png", tmp_path / "tr.png"
    write_pair(left, right, height, width)
    code, out, err = invoke(
        monkeypatch, capsys, "infer", "-c", run["config"], "--imgl", str(left), "--imgr",
        str(right), "--baseline", "0.5", "--f", "500", "--save-path", str(tmp_path / "o"), "--ply",
    )
    assert code == 0 and "Traceback" not in err, err
    assert read_pfm(tmp_path / "o" / "disparity.pfm").shape == (height, width)
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())["pairs"][0]
    assert (summary["height"], summary["width"]) == (height, width)


@pytest.mark.parametrize("fmt", ["middlebury", "eth3d", "kitti"])
def test_calib_file_gives_depth_f_b_over_d_plus_doffs(
    run, tmp_path, monkeypatch, capsys, fmt: str
) -> None:
    from tests.data.test_calibration import ETH3D, KITTI, MIDDLEBURY

    from stereoq.data.pfm import read_pfm

    data = {"middlebury": MIDDLEBURY, "eth3d": ETH3D, "kitti": KITTI}[fmt]
    calib = tmp_path / "calib.txt"
    calib.write_bytes(data)
    out_dir = tmp_path / "out"
    code, out, err = invoke(
        monkeypatch, capsys, "infer", "-c", run["config"], "--imgl", str(run["left"]),
        "--imgr", str(run["right"]), "--calib", str(calib), "--save-path", str(out_dir),
    )
    assert code == 0, err
    cam = json.loads((out_dir / "summary.json").read_text())["camera"]
    f, b, doffs = {
        "middlebury": (4161.221, 0.176252, 209.059),
        "eth3d": (541.764, 0.0598295, 0.0),
        "kitti": (721.5377, (44.85728 + 339.5242) / 721.5377, 0.0),
    }[fmt]
    assert cam["focal_px"] == f and cam["doffs_px"] == doffs
    assert cam["baseline_m"] == pytest.approx(b)
    # ndisp 280 > the tiny model's maxdisp 64: said once; ETH3D's 64 is not.
    assert out.count("ndisp=280") == (1 if fmt == "middlebury" else 0)
    disp = read_pfm(out_dir / "disparity.pfm")
    depth_mm = cv2.imread(str(out_dir / "depth_mm.png"), cv2.IMREAD_UNCHANGED)
    ok = (depth_mm > 0) & (depth_mm < 65535)
    assert ok.any()
    np.testing.assert_allclose(depth_mm[ok], 1000 * f * b / (disp[ok] + doffs), rtol=1e-3,
                               atol=0.51)


def test_explicit_option_overrides_calib(run, tmp_path, monkeypatch, capsys) -> None:
    from tests.data.test_calibration import MIDDLEBURY

    calib = tmp_path / "calib.txt"
    calib.write_bytes(MIDDLEBURY)
    code, out, err = invoke(
        monkeypatch, capsys, "infer", "-c", run["config"], "--imgl", str(run["left"]),
        "--imgr", str(run["right"]), "--calib", str(calib), "--baseline", "0.2", "--doffs", "0",
        "--save-path", str(tmp_path / "o"),
    )
    assert code == 0, err
    assert "--baseline 0.2 overrides 0.176252" in out
    cam = json.loads((tmp_path / "o" / "summary.json").read_text())["camera"]
    assert (cam["baseline_m"], cam["doffs_px"], cam["focal_px"]) == (0.2, 0.0, 4161.221)
