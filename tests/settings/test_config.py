from pathlib import Path

import pytest

from stereoq.errors import StereoqError
from stereoq.settings import load_config
from stereoq.settings.config import shipped_configs


def test_shipped_configs_load_and_match_reference() -> None:
    assert {"stereonet_sceneflow", "stereonet_synthetic"} <= set(shipped_configs())
    ref = load_config("stereonet_sceneflow")
    assert ref.model.neck.params()["out_channels"] == [32, 32, 64, 128, 128, 16]
    assert ref.model.maxdisp == 192 and ref.model.refine_levels == 4
    assert ref.model.num_candidates == 12
    assert ref.model.loss.params()["weights"] == [0.3, 0.3, 0.5, 0.5, 1.0]
    assert ref.stages.float_.optimizer.weight_decay == pytest.approx(4e-5)
    assert ref.stages.float_.scheduler.warmup_epochs == 10
    assert ref.data.train_crop == (256, 512)
    assert (ref.data.mean, ref.data.std, ref.data.color) == (128.0, 128.0, "yuv444")


def test_default_is_synthetic() -> None:
    assert load_config().name == "stereonet_synthetic"
    assert load_config().data.source == "synthetic"


def test_overrides_apply(tiny_config: Path) -> None:
    cfg = load_config(
        str(tiny_config),
        overrides={"stages.float.epochs": 7},
        sets=["model.maxdisp=32", "data.train_crop=[32, 64]"],
    )
    assert cfg.stages.float_.epochs == 7
    assert cfg.model.maxdisp == 32
    assert cfg.data.train_crop == (32, 64)


@pytest.mark.parametrize(
    ("sets", "expected"),
    [
        (["bogus=1"], "bogus: unknown key"),
        (["model.neck.foo=3"], "model.neck: foo: unknown key"),
        (["model.neck.type=resnet9000"], "unknown neck 'resnet9000'"),
        (["model.maxdisp=abc"], "model.maxdisp: Input should be a valid integer"),
        (["model.maxdisp=-16"], "model.maxdisp: Input should be greater than 0"),
        (["model.maxdisp=100"], "multiple of 2**refine_levels"),
        (["model.loss.weights=[1.0, 1.0]"], "loss.weights has 2 entries"),
        (["stages.float.scheduler.warmup_epochs=500"], "exceeds epochs"),
        (["data.source=kitti"], "data.source: Input should be"),
        (["stages.calibration.disparity_conv_bits=12"],
         "stages.calibration.disparity_conv_bits: Input should be 8 or 16"),
        (["stages.qat.disparity_conv_bits=16"], "set stages.calibration.disparity_conv_bits"),
        (["stages.calibration.weight_bits=4"],
         "stages.calibration.weight_bits: Input should be 7 or 8"),
        (["stages.qat.weight_bits=8"], "set stages.calibration.weight_bits"),
    ],
)
def test_bad_values_name_the_key(tiny_config: Path, sets: list[str], expected: str) -> None:
    with pytest.raises(StereoqError) as info:
        load_config(str(tiny_config), sets=sets)
    assert expected in str(info.value)
    assert info.value.exit_code == 2
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("item", "key"),
    [
        ("data.std=.inf", "data.std"),
        ("data.std=inf", "data.std"),  # a string pydantic would read as a float
        ("data.mean=.nan", "data.mean"),
        ("data.synthetic.max_disp=-.inf", "data.synthetic.max_disp"),
        ("stages.float.optimizer.lr=.inf", "stages.float.optimizer.lr"),
        ("stages.qat.scheduler.gamma=.nan", "stages.qat.scheduler.gamma"),
        ("stages.float.grad_clip=.inf", "stages.float.grad_clip"),
        ("stages.calibration.percentile=.nan", "stages.calibration.percentile"),
        ("model.loss.beta=.inf", "model.loss: beta"),
        ("model.loss.weights=[1, 1, 1, 1, .nan]", "model.loss: weights.4"),
        ("data.mean=nan", "data.mean"),
    ],
)
def test_non_finite_floats_are_refused(tiny_config: Path, item: str, key: str) -> None:
    with pytest.raises(StereoqError) as info:
        load_config(str(tiny_config), sets=[item])
    assert f"{key}: Input should be a finite number" in str(info.value), str(info.value)
    assert info.value.exit_code == 2 and "\n" not in str(info.value)


@pytest.mark.parametrize("std", ["0", "-1"])
def test_std_must_be_positive(tiny_config: Path, std: str) -> None:
    with pytest.raises(StereoqError, match="data.std: Input should be greater than 0"):
        load_config(str(tiny_config), sets=[f"data.std={std}"])


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("refine.span_pct=0", "refine.span_pct: Input should be greater than 0"),
        ("refine.steps=0", "refine.steps: Input should be greater than or equal to 1"),
        ("refine.census_weight=1.5", "refine.census_weight: Input should be less than or equal"),
        ("refine.span=3", "refine.span: unknown key"),
        ("refine.edge_window_pct=-1",
         "refine.edge_window_pct: Input should be greater than or equal to 0"),
        ("refine.distance_cost=2", "refine.distance_cost: Input should be less than or equal"),
    ],
)
def test_refine_section_is_validated(tiny_config: Path, item: str, message: str) -> None:
    with pytest.raises(StereoqError, match=message) as info:
        load_config(str(tiny_config), sets=[item])
    assert info.value.exit_code == 2 and "\n" not in str(info.value)
    assert load_config(str(tiny_config), sets=["refine.span_pct=2.5"]).refine.span_pct == 2.5


def test_missing_file_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(StereoqError, match="no such file"):
        load_config(str(tmp_path / "absent.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(StereoqError, match="not valid YAML"):
        load_config(str(bad))
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(StereoqError, match="top level must be a mapping"):
        load_config(str(listy))


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("my.toml", b'name = "x"\n\n[model]\nmaxdisp = 64\n', "not YAML (a .toml file"),
        ("table.toml", b"[model]\nmaxdisp = 64\n", "not YAML (a .toml file"),
        ("latin1.yaml", b"name: caf\xe9\n", "not UTF-8 text (byte 0xe9 at offset 9)"),
        ("empty.yaml", b"", "empty (expected a YAML mapping)"),
        ("words.yaml", b"just words\n", "top level must be a mapping of keys (it is a single str"),
    ],
)
def test_unreadable_config_files_are_one_line(
    tmp_path: Path, name: str, content: bytes, expected: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(StereoqError) as info:
        load_config(str(path))
    assert str(info.value).startswith(f"config {path}: ") and expected in str(info.value)
    assert info.value.exit_code == 2 and "\n" not in str(info.value)


def test_directory_is_not_a_config(tmp_path: Path) -> None:
    with pytest.raises(StereoqError) as info:
        load_config(str(tmp_path))
    assert str(info.value) == f"config {tmp_path}: is a directory, not a config file"
    assert info.value.exit_code == 2


def test_yaml_tags_are_not_executed(tmp_path: Path) -> None:
    evil = tmp_path / "evil.yaml"
    evil.write_text("name: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(StereoqError, match="not valid YAML"):
        load_config(str(evil))
