import pytest
import torch

from stereoq.engine.checkpoint import save_checkpoint
from stereoq.engine.predictor import PaddedGraph
from stereoq.errors import StereoqError
from stereoq.models import DeployGraph
from stereoq.models.build import build_model
from stereoq.settings import load_config
from stereoq.stages import get_stage


def test_missing_float_checkpoint_names_file_and_command(tiny_config) -> None:
    cfg = load_config(str(tiny_config))
    with pytest.raises(StereoqError, match=r"float/best.pt does not exist: run `stereoq train "
                                           r"--stage float`"):
        get_stage(cfg, "float").predictor()


def test_float_predictor_any_size(tiny_config) -> None:
    cfg = load_config(str(tiny_config))
    model = build_model(cfg.model).eval()
    save_checkpoint(cfg.run_dir / "float" / "best.pt", {"model": model.state_dict()})
    predictor = get_stage(cfg, "float").predictor()
    assert not predictor.training
    x = torch.randn(1, 6, 50, 70)
    with torch.no_grad():
        out = predictor(x)
        assert out.shape == (1, 1, 50, 70)
        assert torch.equal(out, model(x))


def test_mismatched_checkpoint_is_one_line(tiny_config, tmp_path) -> None:
    cfg = load_config(str(tiny_config))
    other = load_config(str(tiny_config), sets=["model.refinement.channels=4"])
    path = save_checkpoint(tmp_path / "other.pt", {"model": build_model(other.model).state_dict()})
    with pytest.raises(StereoqError, match="does not match the config's model") as err:
        get_stage(cfg, "float").predictor(path)
    assert "\n" not in str(err.value)


def test_padded_graph_matches_the_float_model(tiny_config) -> None:
    """The wrapper the quantized stages get pads, post-processes and crops like StereoNet."""
    cfg = load_config(str(tiny_config))
    model = build_model(cfg.model).eval()
    wrapped = PaddedGraph(DeployGraph(model), model.postprocess, 16).eval()
    x = torch.randn(2, 6, 40, 90)
    with torch.no_grad():
        assert torch.allclose(wrapped(x), model(x))
