"""The server-side SVG charts: the pair page's ratio against perplexity, the Storage page's size bars."""

import re

import pytest

from webapp.dashboard.charts import Point, SizeBar, _nice_ticks, ratio_quality_svg, size_bars_svg


def test_nothing_to_plot_gives_no_svg():
    assert ratio_quality_svg([]) == ""
    assert ratio_quality_svg([Point("x", "x", float("nan"), 2.0)]) == ""


def test_one_dot_per_point_with_its_label_and_a_reference_line():
    points = [Point("fmdelta", "fmdelta", 12.3, 1.6), Point("bitdelta", "bitdelta", 12.9, 9.8),
              Point("zstd", "zstd", 12.3, 1.1)]
    svg = ratio_quality_svg(points, reference_x=12.3)
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    assert svg.count("<circle") == 3
    for label in ("fmdelta", "bitdelta", "zstd"):
        assert f">{label}</text>" in svg
    assert 'class="ref"' in svg
    # Higher ratio is drawn higher (smaller y), larger perplexity further right.
    cx = {m[2]: (float(m[0]), float(m[1])) for m in re.findall(r'cx="([\d.]+)" cy="([\d.]+)"[^>]*><title>(\w+)', svg)}
    assert cx["bitdelta"][1] < cx["fmdelta"][1] < cx["zstd"][1]
    assert cx["bitdelta"][0] > cx["fmdelta"][0] == cx["zstd"][0]


def test_labels_are_escaped():
    svg = ratio_quality_svg([Point("<script>", "a", 1.0, 2.0)])
    assert "<script>" not in svg and "&lt;script&gt;" in svg


def test_ticks_cover_the_range_with_round_steps():
    ticks = _nice_ticks(1.2, 9.8)
    assert ticks[0] <= 1.2 and ticks[-1] >= 9.8
    steps = {round(b - a, 9) for a, b in zip(ticks, ticks[1:])}
    assert len(steps) == 1 and steps.pop() in (1, 2, 2.5, 5)
    flat = _nice_ticks(3.0, 3.0)
    assert flat[0] < 3.0 < flat[-1]


def test_size_bars_draw_logical_light_and_on_disk_dark_on_one_axis():
    assert size_bars_svg([], title="t") == "" and size_bars_svg([SizeBar("none", 0, 0)], title="t") == ""
    svg = size_bars_svg([SizeBar("models", 4096, 1024), SizeBar("<uploads>", 2048, 2048)], title="space")
    assert svg.startswith("<svg") and svg.endswith("</svg>") and "&lt;uploads&gt;" in svg
    widths = {(m[0], m[1]): float(m[2]) for m in re.findall(
        r'data-label="([^"]+)".*?class="(logical)" x="[\d.]+" y="[\d.]+" width="([\d.]+)"', svg)}
    disk = {m[0]: float(m[1]) for m in re.findall(
        r'data-label="([^"]+)".*?class="on-disk" x="[\d.]+" y="[\d.]+" width="([\d.]+)"', svg)}
    logical_models = widths[("models", "logical")]
    assert disk["models"] == pytest.approx(logical_models / 4)   # 1 KiB of 4 KiB on disk
    assert disk["&lt;uploads&gt;"] == pytest.approx(logical_models / 2)
    assert "1.0 KiB on disk of 4.0 KiB, 3.0 KiB saved" in svg


def test_size_bar_ticks_fall_on_round_binary_units():
    svg = size_bars_svg([SizeBar("model", 33_560_299, 27_681_709)], title="space")
    assert re.findall(r'class="tick" x="[\d.]+" y="[\d.]+" text-anchor="middle">([^<]+)<', svg) == [
        "0 B", "10.0 MiB", "20.0 MiB", "30.0 MiB", "40.0 MiB"]
