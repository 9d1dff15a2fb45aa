import numpy as np

from stereoq.infer.colormap import colorize, display_range, legend_bar, with_legend
from stereoq.infer.overview import compose


def test_jet_low_blue_high_red_invalid_black() -> None:
    values = np.array([[0.0, 10.0, 5.0]], dtype=np.float32)
    valid = np.array([[True, True, False]])
    rgb = colorize(values, valid, 0.0, 10.0)
    low, high, bad = rgb[0]
    assert low[2] > 100 and low[0] < 50  # blue
    assert high[0] > 100 and high[2] < 50  # red
    assert bad.tolist() == [0, 0, 0]
    rev = colorize(values, valid, 0.0, 10.0, reverse=True)
    assert rev[0, 0].tolist() == high.tolist()


def test_display_range_clips_the_far_tail() -> None:
    values = np.concatenate([np.linspace(1, 2, 99), [1000.0]])
    lo, hi, clipped = display_range(values, np.ones(100, bool), upper_percentile=98)
    assert lo == 1.0 and hi < 3 and clipped
    assert display_range(values, np.ones(100, bool)) == (1.0, 1000.0, False)


def test_legend_has_the_picture_height_and_draws_a_bar_and_text() -> None:
    bar = legend_bar(200, 1.0, 9.0, "m")
    assert bar.shape[0] == 200 and bar.dtype == np.uint8
    coloured = (bar.max(axis=2).astype(int) - bar.min(axis=2)) > 100
    dark = bar.max(axis=2) < 60
    assert coloured.sum() > 200 and dark.sum() > 20
    picture = with_legend(np.zeros((200, 50, 3), np.uint8), 1.0, 9.0, "m")
    assert picture.shape == (200, 50 + bar.shape[1], 3)


def test_overview_puts_titled_panels_side_by_side() -> None:
    panels = [("a", np.zeros((100, 80, 3), np.uint8)), ("b", np.zeros((100, 120, 3), np.uint8))]
    picture = compose(panels, footer="note")
    assert picture.shape[1] == 80 + 120 + 12
    assert picture.shape[0] > 100 + 20  # title bar and footer line
