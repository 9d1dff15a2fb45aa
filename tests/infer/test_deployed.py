"""The ``deployed`` stage against the float model it was compiled from (ONNX Runtime)."""

from pathlib import Path

import numpy as np
import pytest

from stereoq.errors import StereoqError
from stereoq.infer.run import DisparityEstimator, estimate
from stereoq.settings import load_config


@pytest.mark.slow
def test_deployed_float_artifact_matches_pytorch_on_odd_sizes(float_run: Path, make_pair) -> None:
    from stereoq.deploy.backends import get_backend
    from stereoq.deploy.compile import artifact_dir
    from stereoq.deploy.onnx_export import default_path, export_stage, read_metadata

    cfg = load_config(str(float_run))
    exported = export_stage(cfg, "float", 48, 64, default_path(cfg, "float"))
    meta = read_metadata(exported.path)
    get_backend("ort").compile(exported.path, meta, artifact_dir(cfg, "ort"))

    deployed = DisparityEstimator(cfg, "deployed")
    assert deployed.artifact.name == "model.onnx"
    left, right = make_pair(37, 53)
    got = deployed(left, right)
    assert got.shape == (37, 53)
    np.testing.assert_allclose(got, DisparityEstimator(cfg, "float")(left, right), atol=1e-3)

    big_l, big_r = make_pair(50, 70)
    with pytest.raises(StereoqError, match=r"at most 64x48: run `stereoq compile --height 64"):
        deployed(big_l, big_r)
    # --max-size brings it inside the artifact (longest side 64): runs, full-size output.
    disp, scale = estimate(deployed, big_l, big_r, max_size=64)
    assert disp.shape == (50, 70) and scale < 1
