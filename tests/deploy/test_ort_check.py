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


@pytest.mark.parametrize("middle", ["int8", "float", "int16"])
def test_the_exports_float_convs_are_the_convs_ort_leaves_out_of_int8_kernels(
    tmp_path: Path, middle: str
) -> None:
    import onnx

    from stereoq.deploy.qdq_graph import QdqGraph

    path = conv_chain(tmp_path / "m.onnx", middle)
    found = QdqGraph(onnx.load(str(path))).float_convs()
    integer, total = get_backend("ort").check(path).conv_summary()
    assert len(found) == total - integer == (0 if middle == "int8" else 1)
    if found:  # the middle one of the three, in graph order
        convs = [n.name for n in onnx.load(str(path)).graph.node if n.op_type == "Conv"]
        assert found == [convs[1]]


def test_scopes_from_parameter_names_keep_underscores(tmp_path: Path) -> None:
    import numpy as np
    import onnx
    from onnx import numpy_helper

    from stereoq.deploy.qdq_graph import node_scopes

    model = onnx.load(str(conv_chain(tmp_path / "m.onnx", "int8")))
    conv = next(n for n in model.graph.node if n.op_type == "Conv")
    bias = "net.model.neck.concat_feature.0.0.bias"  # a re-exported graph's parameter name
    model.graph.initializer.append(numpy_helper.from_array(np.zeros(8, np.float32), bias))
    conv.input.append(bias)
    conv.metadata_props.add(key="pkg.torch.onnx.fx_node",
                            value="%conv2d = aten.conv2d(%x, %w, %p_net_model_neck_concat_"
                                  "feature_0_0_bias)")
    scopes = node_scopes(model)
    assert scopes[conv.name] == "model.neck.concat_feature.0.0"
