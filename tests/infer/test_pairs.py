from pathlib import Path

import pytest

from stereoq.data.pairs import resolve_pairs, right_of
from stereoq.errors import StereoqError


def touch(*paths: Path) -> None:
    for p in paths:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")


@pytest.mark.parametrize(
    "left, right",
    [
        ("left/0001.png", "right/0001.png"),
        ("0001_left.png", "0001_right.png"),
        ("scene/Left/a.png", "scene/Right/a.png"),
        ("LEFT_a.png", "RIGHT_a.png"),
        ("art/im0.png", "art/im1.png"),
        ("im0.png", "im1.png"),
    ],
)
def test_right_of_follows_the_naming_convention(left: str, right: str) -> None:
    assert right_of(left) == right


@pytest.mark.parametrize("path", ["cleft.png", "0001.png", "im01.png", "rightmost.png"])
def test_right_of_rejects_non_left_names(path: str) -> None:
    assert right_of(path) is None


def test_two_files_make_one_pair(tmp_path: Path) -> None:
    touch(tmp_path / "a.png", tmp_path / "b.png")
    (pair,) = resolve_pairs(str(tmp_path / "a.png"), str(tmp_path / "b.png"))
    assert (pair.left.name, pair.right.name, pair.name) == ("a.png", "b.png", "a")


def test_folder_with_left_right_subfolders_and_names(tmp_path: Path) -> None:
    touch(
        tmp_path / "left" / "0001.png", tmp_path / "right" / "0001.png",
        tmp_path / "left" / "0002.png",  # no partner: skipped
        tmp_path / "mb" / "im0.png", tmp_path / "mb" / "im1.png",
        tmp_path / "x_left.jpg", tmp_path / "x_right.jpg",
        tmp_path / "notes.txt",
    )
    pairs = resolve_pairs(str(tmp_path), None)
    assert {p.name: (p.left.relative_to(tmp_path).as_posix(), p.right.name) for p in pairs} == {
        "0001": ("left/0001.png", "0001.png"),
        "mb": ("mb/im0.png", "im1.png"),
        "x": ("x_left.jpg", "x_right.jpg"),
    }


def test_two_folders_pair_same_relative_paths(tmp_path: Path) -> None:
    touch(tmp_path / "L" / "a.png", tmp_path / "R" / "a.png", tmp_path / "L" / "b.png")
    pairs = resolve_pairs(str(tmp_path / "L"), str(tmp_path / "R"))
    assert [(p.name, p.right) for p in pairs] == [("a", tmp_path / "R" / "a.png")]


def test_glob_with_convention_and_with_two_patterns(tmp_path: Path) -> None:
    touch(*(tmp_path / f"{i}_{side}.png" for i in range(3) for side in ("left", "right")))
    pairs = resolve_pairs(str(tmp_path / "*_left.png"), None)
    assert [p.name for p in pairs] == ["0", "1", "2"]
    assert all(p.right.name == p.left.name.replace("left", "right") for p in pairs)
    pairs2 = resolve_pairs(str(tmp_path / "*_left.png"), str(tmp_path / "*_right.png"))
    assert [(p.left, p.right) for p in pairs2] == [(p.left, p.right) for p in pairs]
    with pytest.raises(StereoqError, match="matches 3 images, --imgl matches 2"):
        resolve_pairs(str(tmp_path / "[01]_left.png"), str(tmp_path / "*_right.png"))


@pytest.mark.parametrize(
    "setup, imgl, imgr, message",
    [
        ([], "nope.png", "b.png", "--imgl .*nope.png: no such file"),
        (["a.png"], "a.png", "nope.png", "--imgr .*nope.png: no such file"),
        (["a.png"], "a.png", None, "--imgr: missing"),
        (["d/a.png"], "d", None, "no stereo pair found"),
        ([], "*.png", None, "matches no image"),
        (["a_left.png"], "*_left.png", None, "no matched image has a right partner"),
    ],
)
def test_errors_name_the_option(
    tmp_path: Path, setup: list[str], imgl: str, imgr: str | None, message: str
) -> None:
    touch(*(tmp_path / s for s in setup))
    with pytest.raises(StereoqError, match=message):
        resolve_pairs(str(tmp_path / imgl), str(tmp_path / imgr) if imgr else None)


def test_repeated_names_are_made_unique(tmp_path: Path) -> None:
    touch(
        tmp_path / "a" / "left" / "0001.png", tmp_path / "a" / "right" / "0001.png",
        tmp_path / "a_left" / "0001.png", tmp_path / "a_right" / "0001.png",
    )
    names = [p.name for p in resolve_pairs(str(tmp_path), None)]
    assert sorted(names) == ["a/0001", "a/0001_2"]
