from pathlib import Path

import pytest

from stereoq.deploy.backends import get_backend
from stereoq.deploy.check import FLOAT, INT8, INT16_FLOAT
from stereoq.errors import StereoqError

from .qdq_models import conv_chain


def convs(report):
    return [n for n in report.nodes if "Conv" in n.op_type]


def test_all_convs_fused_into_int8_kernels(tmp_path: Path) -> None:
    report = get_backend("ort").check(conv_chain(tmp_path / "m.onnx", "int8"))
    assert [n.op_type for n in convs(report)] == ["QLinearConv"] * 3
    assert all(n.precision == INT8 for n in convs(report))
    assert report.fallbacks == []
    assert report.conv_summary() == (3, 3)


def test_float_conv_between_int8_convs_is_a_fallback_with_a_reason(tmp_path: Path) -> None:
    report = get_backend("ort").check(conv_chain(tmp_path / "m.onnx", "float"))
    assert report.conv_summary() == (2, 3)
    by_op = {n.op_type.split()[0]: n for n in report.fallbacks}
    assert sorted(by_op) == ["Conv", "Mul"] or sorted(by_op) == ["FusedConv", "Mul"]
    conv = next(n for n in report.fallbacks if "Conv" in n.op_type)
    assert conv.precision == FLOAT and conv.reason == "input from float op Mul"
    assert by_op["Mul"].reason == "output not quantized (no QuantizeLinear after it)"
    assert all(r[2] == FLOAT for r in report.rows()[:2])  # fallbacks are listed first
    assert report.to_json()["fallbacks"] == 2


def test_int16_qdq_runs_as_float_compute(tmp_path: Path) -> None:
    report = get_backend("ort").check(conv_chain(tmp_path / "m.onnx", "int16"))
    assert report.conv_summary() == (2, 3)
    wide = [n for n in report.fallbacks if "Conv" in n.op_type]
    assert len(wide) == 1 and wide[0].precision == INT16_FLOAT
    assert "int16" in wide[0].reason


def test_unknown_backend_is_an_option_error() -> None:
    with pytest.raises(StereoqError, match="--backend: unsupported backend 'trt'") as err:
        get_backend("trt")
    assert err.value.exit_code == 2
