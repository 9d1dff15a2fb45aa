import pickle
import random
import stat

import numpy as np
import pytest
import torch

from stereoq.engine.checkpoint import (
    load_checkpoint,
    load_model_state,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from stereoq.errors import StereoqError


class Payload:
    """Stands for arbitrary code a malicious checkpoint could carry."""

    def __reduce__(self):
        return (print, ("executed",))


def test_roundtrip_is_atomic(tmp_path) -> None:
    path = save_checkpoint(tmp_path / "a" / "last.pt", {"model": {"w": torch.arange(3.0)},
                                                         "epoch": 2})
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]  # no temp file left
    state = load_checkpoint(path)
    assert state["epoch"] == 2 and torch.equal(state["model"]["w"], torch.arange(3.0))


def test_checkpoints_follow_the_umask(tmp_path, umask_022) -> None:
    path = save_checkpoint(tmp_path / "best.pt", {"model": {}})
    assert stat.S_IMODE(path.stat().st_mode) == umask_022  # mkstemp made it 0o600


def test_load_refuses_code_and_names_missing_files(tmp_path, capsys) -> None:
    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"model": Payload()}, protocol=2))
    with pytest.raises(StereoqError, match="evil.pt cannot be read"):
        load_checkpoint(evil)
    assert "executed" not in capsys.readouterr().out
    with pytest.raises(StereoqError, match=r"nope.pt does not exist: make it first"):
        load_checkpoint(tmp_path / "nope.pt", hint="make it first")


def test_rng_state_restores_every_generator(tmp_path) -> None:
    path = save_checkpoint(tmp_path / "r.pt", {"model": {}, "rng": rng_state()})
    first = (torch.rand(3), np.random.rand(3), random.random())
    set_rng_state(load_checkpoint(path)["rng"])
    again = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(first[0], again[0])
    assert np.array_equal(first[1], again[1]) and first[2] == again[2]


@pytest.mark.parametrize(
    ("saved", "first"),
    [
        ({"0.weight": torch.zeros(4, 3), "0.bias": torch.zeros(4)},
         "0.weight is 4x3 in the checkpoint but 2x3 in the model (1 more difference)"),
        ({"0.weight": torch.zeros(2, 3)}, "0.bias is missing from the checkpoint"),
        ({"0.weight": torch.zeros(2, 3), "0.bias": torch.zeros(2), "1.weight": torch.zeros(1)},
         "1.weight is not in the model"),
        # A shape leads even after a missing entry: a checkpoint of another size of network
        ({"0.bias": torch.zeros(5), "1.weight": torch.zeros(1)},
         "0.bias is 5 in the checkpoint but 2 in the model (2 more differences)"),
    ],
)
def test_another_models_state_is_one_line_naming_the_first_difference(
    tmp_path, saved: dict, first: str
) -> None:
    model = torch.nn.Sequential(torch.nn.Linear(3, 2))
    with pytest.raises(StereoqError) as err:
        load_model_state(model, saved, tmp_path / "last.pt", "use the right config")
    message = str(err.value)
    assert "\n" not in message
    assert message == (f"checkpoint {tmp_path / 'last.pt'} holds another model than this "
                       f"config's: {first}; use the right config")
