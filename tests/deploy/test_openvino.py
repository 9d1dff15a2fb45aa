"""The ``openvino`` backend: the export in OpenVINO's form, compile, a fresh-process run, check
from the compiled model, validate, and ``infer --stage deployed`` on the artifact."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

pytest.importorskip("openvino", reason="openvino is not installed (pip install stereoq[openvino])")

from stereoq.deploy.acceptance import DEFAULT, OWN_ROUNDING  # noqa: E402
from stereoq.deploy.backends import backend_names, get_backend  # noqa: E402
from stereoq.deploy.check import FLOAT, FLOAT_MODEL, INT8  # noqa: E402
from stereoq.deploy.compile import check_stage, compile_stage, validate  # noqa: E402
from stereoq.deploy.ov_graph import for_openvino  # noqa: E402
from stereoq.deploy.qdq_graph import QdqGraph  # noqa: E402

from .qdq_models import W_MAX  # noqa: E402
from .test_compile import FRESH  # noqa: E402


def _shift_and_conv(path: Path) -> Path:
    """input -> Q -> DQ -> Pad (shift right by 2, zero fill) -> Q -> DQ -> conv -> Q -> DQ, the
    cost volume's pattern; both convs' weights share one zero-point constant, as exported."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(np.array(0.02, np.float32), "s"),
        numpy_helper.from_array(np.array(100, np.uint8), "z"),
        numpy_helper.from_array(np.array([0, 0, 0, 2, 0, 0, 0, 0], np.int64), "pads"),
        numpy_helper.from_array(np.zeros(8, np.int8), "wz"),
        numpy_helper.from_array(np.full(8, 0.01, np.float32), "ws"),
        numpy_helper.from_array(np.array(0.05, np.float32), "so"),
        numpy_helper.from_array(np.array(0, np.uint8), "zo"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["input", "s", "z"], ["q0"], name="q0"),
        helper.make_node("DequantizeLinear", ["q0", "s", "z"], ["dq0"], name="dq0"),
        helper.make_node("Pad", ["dq0", "pads"], ["pad"], name="node_pad", mode="constant"),
        helper.make_node("QuantizeLinear", ["pad", "s", "z"], ["q1"], name="q1"),
        helper.make_node("DequantizeLinear", ["q1", "s", "z"], ["dq1"], name="dq1"),
    ]
    x = "dq1"
    for k in range(2):
        w = rng.integers(-W_MAX, W_MAX + 1, (8, 8, 3, 3)).astype(np.int8)
        inits.append(numpy_helper.from_array(w, f"w{k}"))
        nodes += [
            helper.make_node(
                "DequantizeLinear", [f"w{k}", "ws", "wz"], [f"wdq{k}"], axis=0, name=f"wdq{k}"
            ),
            helper.make_node("Conv", [x, f"wdq{k}"], [f"c{k}"], pads=[1, 1, 1, 1], name=f"conv{k}"),
            helper.make_node("Relu", [f"c{k}"], [f"r{k}"], name=f"relu{k}"),
            helper.make_node("QuantizeLinear", [f"r{k}", "so", "zo"], [f"qo{k}"], name=f"qo{k}"),
            helper.make_node("DequantizeLinear", [f"qo{k}", "so", "zo"], [f"y{k}"], name=f"dqo{k}"),
        ]
        x = f"y{k}"
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 8, 8, 16])],
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, 8, 8, 18])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


def test_openvino_form_is_bit_exact_and_runs_every_conv_in_u8(tmp_path: Path) -> None:
    import onnxruntime as ort
    import openvino as ov

    source = onnx.load(str(_shift_and_conv(tmp_path / "shift.onnx")))
    rewritten, rewrite = for_openvino(source)
    assert rewrite.integer_pads == 1 and rewrite.weight_zero_points == 2
    assert [n.op_type for n in rewritten.graph.node].count("QuantizeLinear") == 3
    onnx.checker.check_model(rewritten, full_check=True)
    x = np.random.default_rng(1).uniform(-2, 2, (1, 8, 8, 16)).astype(np.float32)

    def run(model: onnx.ModelProto) -> np.ndarray:
        session = ort.InferenceSession(
            model.SerializeToString(), providers=["CPUExecutionProvider"]
        )
        return session.run(None, {"input": x})[0]

    np.testing.assert_array_equal(run(rewritten), run(source))  # the same integers
    core = ov.Core()
    compiled = core.compile_model(
        core.read_model(rewritten.SerializeToString()), "CPU", {"INFERENCE_PRECISION_HINT": "f32"}
    )
    convs = [
        op.get_rt_info()["runtimePrecision"].astype(str)
        for op in compiled.get_runtime_model().get_ordered_ops()
        if op.get_rt_info()["layerType"].astype(str) == "Convolution"
    ]
    assert convs == ["u8", "u8"]
    got = compiled.create_infer_request().infer({0: x})[0]
    assert np.abs(got - run(source)).max() <= 0.05 * 1.001  # one output step at most


def test_residual_adds_keep_the_integer_models_rounding(tmp_path: Path) -> None:
    """Two residual blocks (conv, conv, + the block's input): fused as OpenVINO likes, each Add
    drifts by one LSB; with the conv outputs' rounding kept, OpenVINO computes every integer."""
    import onnxruntime as ort
    import openvino as ov

    from .qdq_models import _Graph

    g, channels = _Graph(), 16
    h = g.qdq(g.relu(g.conv(g.qdq("input", 1 / 128, np.uint8, 128), channels, True)), 0.05)
    for k in range(2):
        mid = g.qdq(g.relu(g.conv(h, channels, True)), 0.045 + 0.003 * k)
        branch = g.qdq(g.conv(mid, channels, True), 0.037 + 0.002 * k, np.uint8, 128)
        added = g.name("add")
        g.nodes.append(helper.make_node("Add", [branch, h], [added], name=added))
        h = g.qdq(g.relu(added), 0.061 - 0.004 * k)
    model = onnx.load(str(g.save(tmp_path / "residual.onnx", "input", h, channels)))
    rewritten, rewrite = for_openvino(model)
    assert rewrite.rounded_adds == 3  # both inputs of the first Add come from convs
    x = np.random.default_rng(0).uniform(-1, 1, (1, channels, 16, 16)).astype(np.float32)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    ref = session.run(None, {"input": x})[0]
    core = ov.Core()
    compiled = core.compile_model(
        core.read_model(rewritten.SerializeToString()), "CPU", {"INFERENCE_PRECISION_HINT": "f32"}
    )
    got = compiled.create_infer_request().infer({0: x})[0]
    np.testing.assert_allclose(got, ref, atol=1e-6)
    # without it, OpenVINO fuses each Add into its conv (faster; openvino-bf16 does this)
    fused, rewrite = for_openvino(model, exact_adds=False)
    assert rewrite.rounded_adds == 0 and "Max" not in {n.op_type for n in fused.graph.node}
    assert rewrite.integer_pads == 0 and rewrite.grid_biases == 0  # no Pad, no conv bias here


def test_biases_on_their_int32_grid_make_openvino_round_as_onnx_runtime(tmp_path: Path) -> None:
    """A conv whose biases sit between accumulator steps, its output scale a few steps wide:
    OpenVINO adding the float bias rounds some outputs the other way; on the grid it does not,
    and ONNX Runtime's integers are unchanged."""
    import onnxruntime as ort
    import openvino as ov

    from stereoq.deploy.ov_graph import biases_on_grid

    from .qdq_models import _Graph

    g, channels = _Graph(), 16
    x_scale = 1 / 64
    bias = g.rng.uniform(-0.02, 0.02, channels)
    y = g.conv(g.qdq("input", x_scale, np.uint8, 128), channels, True, bias)
    y = g.qdq(y, 0.0005, np.uint8, 128)
    model = onnx.load(str(g.save(tmp_path / "bias.onnx", "input", y, channels)))
    on_grid = onnx.ModelProto()
    on_grid.CopyFrom(model)
    assert biases_on_grid(on_grid) == 1
    graph = QdqGraph(on_grid)
    (conv,) = [n for n in on_grid.graph.node if n.op_type == "Conv"]
    w_scale = numpy_helper.to_array(graph.initializers[graph.producer[conv.input[1]].input[1]])
    steps = numpy_helper.to_array(graph.initializers[conv.input[2]]) / (
        np.float32(x_scale) * w_scale
    )
    np.testing.assert_allclose(steps, np.round(steps), atol=1e-3)

    x = np.random.default_rng(0).uniform(-0.1, 0.1, (1, channels, 16, 16)).astype(np.float32)

    def run_ort(m: onnx.ModelProto) -> np.ndarray:
        session = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
        return session.run(None, {"input": x})[0]

    def run_ov(m: onnx.ModelProto) -> np.ndarray:
        core = ov.Core()
        compiled = core.compile_model(
            core.read_model(m.SerializeToString()), "CPU", {"INFERENCE_PRECISION_HINT": "f32"}
        )
        return compiled.create_infer_request().infer({0: x})[0]

    ref = run_ort(model)
    np.testing.assert_array_equal(run_ort(on_grid), ref)  # the same int32 bias
    off_before = int((np.abs(run_ov(model) - ref) > 1e-6).sum())
    off_after = int((np.abs(run_ov(on_grid) - ref) > 1e-6).sum())
    assert off_before >= 10 and off_after <= 1, (off_before, off_after)


def test_backends_are_registered_with_their_precision() -> None:
    assert {"openvino", "openvino-bf16"} <= set(backend_names())
    assert get_backend("openvino").inference_precision == "f32"
    assert get_backend("openvino-bf16").inference_precision == "bf16"
    assert get_backend("openvino").exact_adds and not get_backend("openvino-bf16").exact_adds
    from stereoq.deploy import ort_runner, ov_runner
    from stereoq.deploy.backends.openvino import MODEL_FILE

    assert MODEL_FILE == ov_runner.MODEL_FILE
    half = np.random.default_rng(0).random((1, 1, 5, 7), np.float32)
    offset = np.random.default_rng(1).random((1, 1, 10, 14), np.float32) - 0.5
    np.testing.assert_array_equal(
        ov_runner.postprocess(half, offset, 64.0), ort_runner.postprocess(half, offset, 64.0)
    )


@pytest.fixture(scope="module")
def int_cfg(int_run: Path, tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    """The tiny deploy config with calibration and int_infer run (seeded float weights)."""
    from .conftest import int_run_copy

    return int_run_copy(int_run, tmp_path_factory.mktemp("openvino"))


@pytest.mark.slow
def test_int_infer_compiles_runs_int8_and_validates(int_cfg, tmp_path: Path) -> None:
    report = check_stage(int_cfg, "int_infer", "openvino", 64, 128)
    int_convs, convs = report.conv_summary()
    # every conv but the stem's (3 input channels) in u8; the reasons come from the source
    assert convs == 35 and int_convs == 34
    float_conv = [n for n in report.nodes if n.op_type == "Convolution" and n.precision != INT8]
    assert "3 input channels" in float_conv[0].reason and float_conv[0].scope
    assert all(n.reason for n in report.fallbacks)
    assert any("int16" in n.reason for n in report.fallbacks)  # the disparity path, by design

    with compile_stage(
        int_cfg, "int_infer", "openvino", 64, 128, runs=2, warmup=1, threads=1, top=5
    ) as result:
        out = result.current_dir
        assert sorted(p.name for p in out.iterdir()) == [
            "metadata.json",
            "model.bin",
            "model.xml",
            "openvino.json",
            "run_stereo.py",
        ]
        config = json.loads((out / "openvino.json").read_text())
        assert config["rewrite"]["integer_pads"] == 6 and config["integer_convolutions"] == 34
        perf = result.performance
        assert 0 < perf["median_ms"] <= perf["p90_ms"] and perf["inference_precision"] == "f32"
        assert perf["peak_rss_mib"] > perf["rss_before_session_mib"] > 0
        top = perf["top_layers"]
        assert len(top) == 5 and [r["ms"] for r in top] == sorted(
            (r["ms"] for r in top), reverse=True
        )
        assert any(r["scope"].startswith("model.") for r in top)
        # OpenVINO rounds its own way: judged by what a user sees, not bit for bit
        v = validate(int_cfg, get_backend("openvino"), out, result.metadata, 2)
        assert v["ok"], v["problems"]
        assert v["acceptance"]["within_pct"] >= 99.0
        # judged by the thresholds of a runtime that rounds its own way, and says so
        assert v["acceptance"]["thresholds"]["min_within_pct"] == OWN_ROUNDING.min_within_pct
        assert OWN_ROUNDING.min_within_pct < DEFAULT.min_within_pct
        result.commit()

    # the artifact alone, in a process where stereoq and torch cannot be imported
    x = np.random.default_rng(0).uniform(-1, 1, (1, 6, 64, 128)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    folder = result.artifact_dir
    cmd = [
        sys.executable,
        "-c",
        FRESH.format(script=str(folder / "run_stereo.py")),
        str(folder),
        "predict",
        str(tmp_path / "x.npy"),
        str(tmp_path / "d.npy"),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    np.testing.assert_allclose(
        np.load(tmp_path / "d.npy"), get_backend("openvino").runner(folder).predict(x), atol=1e-5
    )

    from stereoq.infer.run import DisparityEstimator

    deployed = DisparityEstimator(int_cfg, "deployed", backend="openvino")
    assert deployed.artifact.name == "model.xml"
    rgb = np.random.default_rng(2).integers(0, 255, (50, 100, 3), dtype=np.uint8)
    assert deployed(rgb, rgb).shape == (50, 100)


def test_float_model_in_f32_matches_pytorch_and_check_reads_the_compiled_model(
    deploy_cfg, float_export
) -> None:
    report = check_stage(deploy_cfg, "float", "openvino", 64, 128)
    convs = [n for n in report.nodes if n.op_type == "Convolution"]
    assert len(convs) == 35 and {(n.precision, n.reason) for n in convs} == {(FLOAT, FLOAT_MODEL)}
    with compile_stage(
        deploy_cfg, "float", "openvino", 64, 128, runs=2, warmup=1, threads=1, top=3
    ) as result:
        v = validate(deploy_cfg, get_backend("openvino"), result.current_dir, result.metadata, 2)
    assert v["ok"] and v["agreement"]["disparity_max_abs_px"] < 1e-2
    assert v["deployed"]["epe"] == pytest.approx(v["reference"]["epe"], abs=1e-3)


def test_missing_artifact_names_the_backend(deploy_cfg) -> None:
    from stereoq.errors import StereoqError
    from stereoq.infer.deployed import load_deployed

    with pytest.raises(StereoqError, match="stereoq compile --backend openvino-bf16"):
        load_deployed(deploy_cfg, "openvino-bf16")
