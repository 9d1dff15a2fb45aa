"""Each shipped model's recipe (card ``training.reproduce``): it parses, the card's commands are
the ones it generates, and broken recipes are refused with the reason."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from stereoq import weights
from stereoq.weights import recipe as recipes

NAMES = weights.names()


@pytest.mark.parametrize("name", NAMES)
def test_the_cards_commands_are_its_recipes(name: str) -> None:
    steps = recipes.recipe(name)
    training = weights.card(name)["training"]
    generated = recipes.commands(name, steps)
    assert training["commands"][: len(generated)] == generated
    assert training["command"] == f"python bench/train_weights.py {name} --out OUT"
    # The model is the last run's best weights, and the card says so after the commands.
    assert f"OUT/runs/{steps.final.name}/float/best.pt" in training["commands"][len(generated)]
    assert steps.train_count == weights.config(name).data.synthetic.train_count


def test_a_run_starts_from_the_earlier_runs_best_weights_and_later_sets_win() -> None:
    steps = recipes.Recipe.model_validate({"train_count": 8, "runs": [
        {"name": "a", "threads": 1},
        {"name": "b", "init_from": "a", "threads": 2, "sets": ["stages.float.epochs=3"]},
    ]})
    argv = recipes.train_argv("light-scenes", steps.final, Path("OUT"), ["stages.float.epochs=1"])
    assert argv[argv.index("--init-from") + 1] == str(Path("OUT/runs/a/float/best.pt"))
    sets = [argv[i + 1] for i, arg in enumerate(argv) if arg == "--set"]
    assert sets.index("stages.float.epochs=1") > sets.index("stages.float.epochs=3")
    assert "name=b" in sets and f"data.lmdb_dir={Path('OUT/data')}" in sets
    assert "--init-from" not in recipes.train_argv("light-scenes", steps.runs[0], Path("OUT"))
    lines = recipes.commands("light-scenes", steps)
    assert lines[0].startswith("python -m stereoq pack --source synthetic --split-name train "
                               "--count 8 ")
    assert "--count" not in lines[1] and lines[3].startswith("OMP_WAIT_POLICY=PASSIVE "
                                                             "OMP_NUM_THREADS=2 python -m stereoq")


@pytest.mark.parametrize(("runs", "reason"), [
    ([], "at least 1"),
    ([{"name": "a", "threads": 1}, {"name": "a", "threads": 1}], "run 'a' appears twice"),
    ([{"name": "b", "init_from": "a", "threads": 1}, {"name": "a", "threads": 1}],
     "starts from 'a', which is not an earlier run"),
    ([{"name": "a b", "threads": 1}], "should match pattern"),
    ([{"name": "a", "threads": 0}], "greater than 0"),
    ([{"name": "a", "threads": 1, "lr": 1}], "Extra inputs"),
])
def test_broken_recipes_are_refused(runs: list, reason: str) -> None:
    with pytest.raises(ValidationError, match=reason):
        recipes.Recipe.model_validate({"train_count": 8, "runs": runs})


def test_a_card_without_a_recipe_or_with_a_broken_one_is_a_one_line_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from stereoq.errors import StereoqError

    monkeypatch.setattr(weights, "card", lambda name: {"training": {}})
    with pytest.raises(StereoqError, match="^shipped model m: its card has no training.reproduce"):
        recipes.recipe("m")
    broken = {"training": {"reproduce": {"train_count": 8, "runs": [{"name": "a"}]}}}
    monkeypatch.setattr(weights, "card", lambda name: broken)
    with pytest.raises(StereoqError, match=r"^shipped model m: card training.reproduce.runs.0."
                                           r"threads: Field required$"):
        recipes.recipe("m")
