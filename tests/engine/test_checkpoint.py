import pickle
import random
import stat

import numpy as np
import pytest
import torch

from stereoq.engine.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
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
