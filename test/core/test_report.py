"""The HTML report and its inline SVG charts (no QGIS, no tuned.py needed)."""

from __future__ import annotations

import math
import re
import types
import xml.etree.ElementTree as ET

import numpy as np
import pandas as pd
import pytest

from tuned_grid_clustering.core.charts import (
    format_number,
    nice_ticks,
    svg_bar_chart,
    svg_histogram,
    svg_scatter_line,
)
from tuned_grid_clustering.core.report import clustering_report_html, write_report

SVG_NS = "{http://www.w3.org/2000/svg}"


def _svgs(text: str) -> list[str]:
    return re.findall(r"<svg\b.*?</svg>", text, flags=re.S)


def _parse(svg: str) -> ET.Element:
    """The SVG must be well-formed XML (it is pasted into HTML as is)."""
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG_NS}svg"
    return root


def _texts(svg: str) -> list[str]:
    return ["".join(node.itertext()) for node in _parse(svg).iter(f"{SVG_NS}text")]


def _stand_in_result(n_clusters: int = 20, *, status: bool = False, seed: int = 0):
    """A duck-typed ClusteringResult: two passes, a known best k."""
    rng = np.random.default_rng(seed)
    weights = rng.gamma(6.0, 35.0, n_clusters)
    clusters = pd.DataFrame(
        {
            "cluster_id": [f"CLUSTER_{i + 1:03d}" for i in range(n_clusters)],
            "weight": weights,
            "radius_m": rng.gamma(3.0, 400.0, n_clusters),
            "n_units": rng.integers(50, 900, n_clusters),
            "pass": np.where(weights > 300, 2, 1),
            "centre_x": rng.normal(0, 1e4, n_clusters),
            "centre_y": rng.normal(0, 1e4, n_clusters),
        }
    )
    if status:
        clusters["status"] = np.where(weights > 300, "too heavy", "ok")
    ks = [12, 15, 17, 19, 19, 21, 24, 27]
    trials = pd.DataFrame(
        {
            "pass": [1] * len(ks) + [2, 2],
            "parent_id": [None] * len(ks) + ["CLUSTER_004", "CLUSTER_004"],
            "trial": list(range(len(ks))) + [0, 1],
            "k": ks + [2, 3],
            "score": [900.0, 700.0, 520.0, 410.0, 450.0, 480.0, 610.0, 800.0, 90.0, 120.0],
            "median_weight": rng.uniform(150, 300, len(ks) + 2),
            "median_radius_m": rng.uniform(800, 1500, len(ks) + 2),
        }
    )
    return types.SimpleNamespace(clusters=clusters, trials=trials, best_k=19, n_clusters=n_clusters)


PARAMETERS = {
    "target_weight": 240,
    "min_cluster_weight": 180,
    "max_cluster_weight": 300,
    "target_radius": 1000,
    "max_radius": 2500,
    "seed": 0,
}


# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------


def test_full_report_has_charts_targets_and_tables():
    result = _stand_in_result(status=True)
    quality = {
        "share_in_range": 0.55,
        "share_contiguous": 0.9,
        "share_within_radius_cap": 0.85,
        "share_ok": 0.5,
        "status_counts": {"ok": 17, "too heavy": 3},
    }
    page = clustering_report_html(
        result, PARAMETERS, quality=quality, notes=["3 clusters exceed the maximum weight"]
    )
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert "<title>Tuned Grid Clustering report</title>" in page
    svgs = _svgs(page)
    # trials, weight, radius, shares, status counts
    assert len(svgs) == 5
    all_text = [text for svg in svgs for text in _texts(svg)]
    assert "best k = 19" in all_text
    assert {"target 240", "min 180", "max 300"} <= set(all_text)
    assert {"target radius 1,000", "max radius 2,500"} <= set(all_text)
    assert "55%" in all_text and "too heavy" in all_text
    # Summary figures computed from the clusters.
    weights = result.clusters["weight"]
    in_range = np.mean((weights >= 180) & (weights <= 300))
    assert f"{in_range:.0%}" in page
    assert format_number(float(np.median(weights))) in page
    # Trials table of all passes, collapsed; the best pass-1 trial is marked.
    assert "<details><summary>All 10 trials (2 passes)</summary>" in page
    best_rows = re.findall(r'<tr class="best">(.*?)</tr>', page)
    assert len(best_rows) == 1 and ">410.00<" in best_rows[0]
    assert "CLUSTER_020" in page  # clusters table
    assert "3 clusters exceed the maximum weight" in page


def test_report_without_optional_parts():
    result = _stand_in_result()
    page = clustering_report_html(result, {"target_weight": 240, "target_radius": 1000})
    assert "Quality checks" not in page
    assert "<h2>Notes</h2>" not in page
    svgs = _svgs(page)
    assert len(svgs) == 3  # trials, weight, radius
    texts = [text for svg in svgs for text in _texts(svg)]
    assert "target 240" in texts
    assert not any(text.startswith(("min ", "max ")) for text in texts)
    assert "Weight in range" not in page  # no range given, no share


def test_status_column_gives_status_counts_without_quality():
    page = clustering_report_html(_stand_in_result(status=True), PARAMETERS)
    assert "Quality checks" in page and "Status counts" in page


def test_parameter_values_title_and_notes_are_escaped():
    evil = "<script>alert('x')</script>"
    page = clustering_report_html(
        _stand_in_result(),
        {"weight_field": evil, "<b>name</b>": 1, "flag": True, "missing": None},
        title="Report & <i>stuff</i>",
        notes=[evil],
        quality={"label": evil},
    )
    assert "<script>" not in page and "<b>name</b>" not in page and "<i>stuff</i>" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert "Report &amp; &lt;i&gt;stuff&lt;/i&gt;" in page
    assert "<td>yes</td>" in page  # bool shown as yes/no
    for svg in _svgs(page):
        _parse(svg)


def test_targets_are_read_from_result_params():
    result = _stand_in_result()
    result.params = {"desired_cluster_weight": 250, "desired_cluster_radius": 1200}
    page = clustering_report_html(result, {})
    texts = [text for svg in _svgs(page) for text in _texts(svg)]
    assert "target 250" in texts and "target radius 1,200" in texts
    assert "No parameters recorded." in page


def test_empty_result_renders():
    empty = types.SimpleNamespace(
        clusters=pd.DataFrame(columns=["cluster_id", "weight", "radius_m", "n_units", "pass"]),
        trials=pd.DataFrame(columns=["pass", "parent_id", "trial", "k", "score"]),
        best_k=None,
        n_clusters=0,
    )
    page = clustering_report_html(empty, PARAMETERS)
    assert "No tuning trials recorded." in page
    assert len(_svgs(page)) == 2  # the two histograms, empty
    # Missing attributes altogether are tolerated too.
    page = clustering_report_html(types.SimpleNamespace(), {})
    assert "<h1>Tuned Grid Clustering report</h1>" in page


def test_write_report_creates_folders(tmp_path):
    page = clustering_report_html(_stand_in_result(), PARAMETERS, notes=["é ü 中"])
    path = write_report(page, tmp_path / "sub" / "report.html")
    assert path.read_text(encoding="utf-8") == page


def test_report_of_a_real_clustering_result():
    """End to end with the real estimator on a small synthetic grid."""
    tuned = pytest.importorskip("tuned_grid_clustering.core.tuned")
    from tuned_grid_clustering.core.synthetic import synthetic_population_grid

    grid = synthetic_population_grid(1500, seed=2)
    # Equirectangular metres are good enough for a 6 km wide test area.
    lat0 = math.radians(float(grid.lat.mean()))
    xy = np.column_stack([grid.lon * 111_320.0 * math.cos(lat0), grid.lat * 110_574.0])
    estimator = tuned.TunedClustering(
        desired_cluster_weight=100, desired_cluster_radius=800, initial_max_trials=8
    )
    result = estimator.fit(xy, grid.population)
    page = clustering_report_html(result, estimator.get_params())
    texts = [text for svg in _svgs(page) for text in _texts(svg)]
    assert f"best k = {result.best_k}" in texts
    assert "target 100" in texts and "target radius 800" in texts


def test_partitioned_run_gets_a_row_and_a_chart_per_partition():
    """Each partition's own best k and figures; trials are not mixed across partitions."""
    from tuned_grid_clustering.core.partitions import cluster_partitions
    from tuned_grid_clustering.core.synthetic import synthetic_population_grid

    grid = synthetic_population_grid(2400, seed=3, admin_cells=800)
    lat0 = math.radians(float(grid.lat.mean()))
    xy = np.column_stack([grid.lon * 111_320.0 * math.cos(lat0), grid.lat * 110_574.0])
    params = dict(desired_cluster_weight=60, desired_cluster_radius=800, initial_max_trials=8)
    result = cluster_partitions(xy, grid.population, grid.admin, params=params, n_jobs=1)
    page = clustering_report_html(result, {**params, "min_cluster_weight": 45})

    keys = sorted(result.clusters["partition"].unique())
    assert len(keys) >= 2
    assert "<h2>Partitions</h2>" in page
    texts = [text for svg in _svgs(page) for text in _texts(svg)]
    for key in keys:
        own = result.outcomes[key].result
        assert f"{key}: score by k (first pass)" in texts
        assert f"best k = {own.best_k}" in texts
    table = page.split("<h2>Partitions</h2>", 1)[1].split("</table>", 1)[0]
    assert table.count("<tr>") == len(keys) + 1  # header + one row per partition


def test_unpartitioned_report_has_no_partitions_section():
    frame = pd.DataFrame({"partition": ["a", "a"], "weight": [1.0, 2.0]})
    page = clustering_report_html(types.SimpleNamespace(clusters=frame), {})
    assert "<h2>Partitions</h2>" not in page


# ---------------------------------------------------------------------------
# Charts
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda: svg_histogram([]),
        lambda: svg_histogram(None, markers={"target": 240}),
        lambda: svg_histogram([np.nan, np.inf]),
        lambda: svg_histogram([5.0, 5.0, 5.0], markers={"target": 5.0}),
        lambda: svg_histogram([0.0]),
        lambda: svg_scatter_line([], []),
        lambda: svg_scatter_line([3, 3], [2.0, 2.0], highlight_x=3),
        lambda: svg_scatter_line([1, 2], [np.nan, 1.0], highlight_x=7),
        lambda: svg_bar_chart([], []),
        lambda: svg_bar_chart(["a", "b"], [0, 0]),
        lambda: svg_bar_chart(["a"], [-3.0]),
    ],
)
def test_charts_survive_empty_constant_and_odd_input(make):
    svg = make()
    root = _parse(svg)
    assert root.get("width") == "560"


def test_histogram_counts_every_value_once():
    values = np.random.default_rng(1).gamma(4.0, 50.0, 321)
    svg = svg_histogram(values, bins=20)
    counts = [
        int(title.text.rsplit(": ", 1)[1])
        for rect in _parse(svg).iter(f"{SVG_NS}rect")
        for title in rect.iter(f"{SVG_NS}title")
    ]
    assert sum(counts) == 321
    assert 10 <= len(counts) <= 30


def test_histogram_marks_far_markers_at_the_edge_and_shades_range():
    svg = svg_histogram([1, 2, 3], markers={"max": 1e9}, shade_range=(1.5, 2.5))
    assert any(text.endswith("\u2192") for text in _texts(svg))
    assert 'fill-opacity="0.12"' in svg  # the shaded band


def test_chart_text_is_escaped():
    svg = svg_scatter_line([1, 2], [3, 4], title="<k> & score", x_label="a<b", highlight_x=2)
    texts = _texts(svg)
    assert "<k> & score" in texts and "a<b" in texts


def test_mismatched_lengths_are_rejected():
    with pytest.raises(ValueError, match="differ in length"):
        svg_scatter_line([1, 2], [1])
    with pytest.raises(ValueError, match="differ in length"):
        svg_bar_chart(["a"], [1, 2])


@pytest.mark.parametrize("low, high", [(0, 1), (3.2, 977.0), (-5, 5), (180, 300), (0.001, 0.004)])
def test_nice_ticks_are_round_even_and_inside(low, high):
    ticks = nice_ticks(low, high, 6)
    assert 2 <= len(ticks) <= 7
    assert all(low - 1e-12 <= t <= high + 1e-12 for t in ticks)
    steps = np.diff(ticks)
    assert np.allclose(steps, steps[0])


@pytest.mark.parametrize("high", [1, 3, 7, 12.5, 41])
def test_integer_ticks_are_whole(high):
    ticks = nice_ticks(0, high, 6, integer=True)
    assert ticks[0] == 0 and all(t == int(t) for t in ticks)
