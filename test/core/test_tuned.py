"""The tuned clustering engine: result contract, passes, determinism, validation."""

from __future__ import annotations

import re
import threading
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tuned_grid_clustering.core import (
    ClusteringCancelled,
    ClusteringInputError,
    ClusteringResult,
    TunedClustering,
)
from tuned_grid_clustering.core.geometry import minimum_enclosing_circle
from tuned_grid_clustering.core.search import clustering_score

CLUSTER_COLUMNS = [
    "cluster_id",
    "weight",
    "radius_m",
    "n_units",
    "pass",
    "centre_x",
    "centre_y",
    "status",
]
TRIAL_COLUMNS = ["pass", "parent_id", "trial", "k", "score", "median_weight", "median_radius_m"]


def blobs(sizes, spread=150.0, gap=5000.0, seed=0):
    """Round blobs of units on a line, ``gap`` metres apart, weight 1 each."""
    rng = np.random.default_rng(seed)
    parts = [
        rng.normal(size=(size, 2)) * spread + [index * gap + 500_000.0, 1_000_000.0]
        for index, size in enumerate(sizes)
    ]
    return np.vstack(parts)


def grid(n_side=40, spacing=100.0, seed=0):
    """A square grid of units with random weights."""
    rng = np.random.default_rng(seed)
    ii, jj = np.meshgrid(np.arange(n_side), np.arange(n_side))
    xy = np.column_stack([ii.ravel(), jj.ravel()]) * spacing + [300_000.0, 900_000.0]
    return xy, rng.gamma(2.0, 1.0, size=xy.shape[0])


def check_contract(result: ClusteringResult, xy: np.ndarray, weights: np.ndarray) -> None:
    """Invariants every result must satisfy."""
    n = xy.shape[0]
    clusters = result.clusters
    assert list(clusters.columns) == CLUSTER_COLUMNS
    assert list(result.trials.columns) == TRIAL_COLUMNS
    assert clusters["cluster_id"].tolist() == sorted(clusters["cluster_id"])
    assert clusters["cluster_id"].is_unique
    assert result.n_clusters == len(clusters)
    # Every unit is in exactly one cluster, and every cluster has units.
    assert result.labels.shape == (n,)
    assert result.labels.min() >= 0 and result.labels.max() < len(clusters)
    assert np.array_equal(np.bincount(result.labels, minlength=len(clusters)), clusters["n_units"])
    assert (clusters["n_units"] > 0).all()
    assert clusters["n_units"].sum() == n
    assert clusters["weight"].sum() == pytest.approx(weights.sum())
    assert (clusters["cluster_id"].to_numpy()[result.labels] == result.cluster_ids).all()
    assert (clusters["pass"].to_numpy()[result.labels] == result.cluster_pass).all()
    # Radius and centre are the minimum enclosing circle of the members.
    for code in range(min(len(clusters), 5)):
        cx, cy, r = minimum_enclosing_circle(xy[result.labels == code])
        row = clusters.iloc[code]
        assert row["radius_m"] == pytest.approx(r, rel=1e-9, abs=1e-9)
        assert (row["centre_x"], row["centre_y"]) == pytest.approx((cx, cy), abs=1e-6)
    # IDs: CLUSTER_ + 3+ digits at the top, 2+ digits per later pass.
    for cluster_id, pass_number in zip(clusters["cluster_id"], clusters["pass"]):
        parts = cluster_id.split("_")
        assert parts[0] == "CLUSTER" and len(parts[1]) >= 3
        assert all(len(p) >= 2 and p.isdigit() for p in parts[2:])
        assert len(parts) - 1 <= pass_number


# -- basic behaviour -----------------------------------------------------------


def test_separated_blobs_become_one_cluster_each():
    xy = blobs([100, 100, 100, 100])
    # One trial: k = k0 = total weight / desired weight = 4.
    result = TunedClustering(
        desired_cluster_weight=100,
        desired_cluster_radius=300,
        initial_max_trials=1,
        contiguity=False,
    ).fit(xy)
    check_contract(result, xy, np.ones(len(xy)))
    assert result.n_clusters == 4
    assert result.clusters["weight"].tolist() == [100.0] * 4
    assert result.clusters["cluster_id"].tolist() == [f"CLUSTER_00{i}" for i in range(1, 5)]
    assert result.best_k == 4
    assert (result.cluster_pass == 1).all()
    for label in range(4):  # each blob lies in one cluster
        assert len(set(result.labels[label * 100 : (label + 1) * 100])) == 1


def test_trials_table_and_best_k_agree_with_score():
    xy, weights = grid()
    estimator = TunedClustering(
        desired_cluster_weight=200, desired_cluster_radius=600, contiguity=False
    )
    result = estimator.fit(xy, weights)
    check_contract(result, xy, weights)
    trials = result.trials
    assert (trials["pass"] == 1).all() and trials["parent_id"].isna().all()
    assert trials["trial"].tolist() == list(range(len(trials)))
    assert trials["k"].is_unique and len(trials) <= 100
    best = trials.sort_values(["score", "k"]).iloc[0]
    assert result.best_k == best["k"]
    for _, row in trials.iterrows():
        assert row["score"] == pytest.approx(
            clustering_score(row["median_weight"], row["median_radius_m"], 200, 600)
        )
    # The chosen clustering is the best trial's: same medians.
    assert result.clusters["weight"].median() == pytest.approx(best["median_weight"])
    assert result.clusters["radius_m"].median() == pytest.approx(best["median_radius_m"])
    assert result.params == estimator.get_params()


def test_single_unit_gives_cluster_001():
    result = TunedClustering(240, 1000).fit([[500_000.0, 1_000_000.0]], [12.5])
    assert result.clusters["cluster_id"].tolist() == ["CLUSTER_001"]
    assert result.clusters["radius_m"].tolist() == [0.0]
    assert result.labels.tolist() == [0] and result.best_k == 1


def test_more_clusters_than_units_is_clamped():
    xy = blobs([1, 1, 1, 1, 1], gap=1000)
    result = TunedClustering(
        desired_cluster_weight=1, desired_cluster_radius=10, contiguity=False
    ).fit(xy, weights=[100.0] * 5)
    check_contract(result, xy, np.full(5, 100.0))
    # k0 = 500 is clamped to the 5 units; k = 4 and 5 tie (same medians), so 4 wins.
    assert result.trials["k"].max() == 5
    assert result.n_clusters == result.best_k == 4


def test_identical_locations_collapse_to_one_cluster():
    xy = np.tile([[600_000.0, 1_500_000.0]], (30, 1))
    result = TunedClustering(desired_cluster_weight=5, desired_cluster_radius=100).fit(xy)
    check_contract(result, xy, np.ones(30))
    assert result.n_clusters == 1


def test_zero_weight_units_are_kept():
    xy, weights = grid(20)
    weights[::3] = 0.0
    result = TunedClustering(desired_cluster_weight=50, desired_cluster_radius=300).fit(xy, weights)
    check_contract(result, xy, weights)


def test_default_weights_are_one_per_unit():
    xy, _ = grid(15)
    result = TunedClustering(desired_cluster_weight=25, desired_cluster_radius=200).fit(xy)
    check_contract(result, xy, np.ones(len(xy)))
    assert result.clusters["weight"].sum() == len(xy)


def test_hierarchical_id_width_grows_with_the_count():
    xy = blobs([1] * 1200, spread=0, gap=100)
    result = TunedClustering(
        desired_cluster_weight=1, desired_cluster_radius=1, initial_max_trials=1, contiguity=False
    ).fit(xy)
    assert result.n_clusters == 1200
    assert result.clusters["cluster_id"].iloc[0] == "CLUSTER_0001"


# -- extra passes --------------------------------------------------------------


def heavy_blob_data():
    """One dense heavy blob and three light ones: pass 1 (k = k0 = 4) keeps the heavy
    blob whole, as one cluster of weight 400 > max 150."""
    xy = blobs([400, 40, 40, 40], spread=200, gap=8000, seed=1)
    return xy, np.ones(len(xy))


def test_extra_passes_split_oversized_clusters():
    xy, weights = heavy_blob_data()
    one_pass = TunedClustering(
        desired_cluster_weight=130,
        desired_cluster_radius=150,
        max_cluster_weight=150,
        max_passes=1,
        initial_max_trials=1,
        contiguity=False,
    ).fit(xy, weights)
    assert (one_pass.clusters["weight"] > 150).sum() == 1
    assert one_pass.trials["pass"].max() == 1

    result = TunedClustering(
        desired_cluster_weight=130,
        desired_cluster_radius=150,
        max_cluster_weight=150,
        max_passes=10,
        initial_max_trials=1,
        contiguity=False,
    ).fit(xy, weights)
    check_contract(result, xy, weights)
    clusters = result.clusters
    heavy_parent = one_pass.clusters.loc[one_pass.clusters["weight"] > 150, "cluster_id"].item()
    assert heavy_parent not in set(clusters["cluster_id"])
    children = clusters[clusters["cluster_id"].str.startswith(heavy_parent + "_")]
    assert len(children) >= 3
    assert (children["pass"] >= 2).all()
    assert all(re.fullmatch(r"CLUSTER_\d{3}(_\d{2})+", c) for c in children["cluster_id"])
    assert children["weight"].sum() == pytest.approx(400)
    assert (clusters["weight"] <= 150).all()
    # Clusters untouched by later passes keep their pass-1 id and pass number.
    light = one_pass.clusters[one_pass.clusters["weight"] <= 150]
    kept = clusters.set_index("cluster_id").loc[light["cluster_id"]]
    assert (kept["pass"] == 1).all()
    # Trials of later passes name their parent.
    later = result.trials[result.trials["pass"] > 1]
    assert len(later) > 0 and later["parent_id"].notna().all()
    assert later["parent_id"].iloc[0] == heavy_parent


def test_passes_stop_at_max_passes():
    xy, weights = heavy_blob_data()
    result = TunedClustering(
        desired_cluster_weight=30,
        desired_cluster_radius=20,
        max_cluster_weight=40,
        max_passes=2,
        initial_max_trials=1,
        subsequent_max_trials=1,
        contiguity=False,
    ).fit(xy, weights)
    check_contract(result, xy, weights)
    assert result.clusters["pass"].max() == 2
    assert result.trials["pass"].max() == 2


def test_unsplittable_heavy_unit_does_not_loop_forever():
    xy = blobs([1, 30, 30], spread=50, gap=3000)
    weights = np.ones(len(xy))
    weights[0] = 1000.0  # one unit alone heavier than the maximum
    result = TunedClustering(
        desired_cluster_weight=20,
        desired_cluster_radius=100,
        max_cluster_weight=40,
        max_passes=100,
        contiguity=False,
    ).fit(xy, weights)
    check_contract(result, xy, weights)
    heavy = result.clusters[result.clusters["weight"] > 40]
    assert heavy["n_units"].tolist() == [1]
    assert result.clusters["pass"].max() < 100


# -- determinism, threads, progress, cancellation -------------------------------


def test_same_result_whatever_n_jobs():
    xy, weights = heavy_blob_data()
    params = dict(
        desired_cluster_weight=60,
        desired_cluster_radius=150,
        max_cluster_weight=90,
        max_passes=6,
        initial_max_trials=12,
        subsequent_max_trials=8,
        contiguity=False,
    )
    one = TunedClustering(**params, n_jobs=1).fit(xy, weights)
    two = TunedClustering(**params, n_jobs=2).fit(xy, weights)
    every_cpu = TunedClustering(**params, n_jobs=-1).fit(xy, weights)
    again = TunedClustering(**params, n_jobs=1).fit(xy, weights)
    for other in (two, every_cpu, again):
        assert (one.cluster_ids == other.cluster_ids).all()
        assert np.array_equal(one.labels, other.labels)
        pd.testing.assert_frame_equal(one.clusters, other.clusters)
        pd.testing.assert_frame_equal(one.trials, other.trials)
    assert one.clusters["pass"].max() >= 2  # the parallel part was exercised


def test_random_state_changes_nothing_but_the_seed():
    xy, weights = grid(30, seed=4)
    a = TunedClustering(80, 400, random_state=1).fit(xy, weights)
    b = TunedClustering(80, 400, random_state=1).fit(xy, weights)
    assert np.array_equal(a.labels, b.labels)


def test_progress_is_reported_monotonically_up_to_one():
    xy, weights = heavy_blob_data()
    calls: list[tuple[float, str]] = []
    TunedClustering(
        desired_cluster_weight=60,
        desired_cluster_radius=150,
        max_cluster_weight=90,
        max_passes=5,
    ).fit(xy, weights, progress=lambda f, m: calls.append((f, m)))
    fractions = [f for f, _ in calls]
    assert len(calls) > 5
    assert all(0.0 <= f <= 1.0 for f in fractions)
    assert fractions == sorted(fractions)
    assert fractions[-1] == 1.0
    assert all(isinstance(m, str) and m for _, m in calls)
    assert any(m.startswith("Pass 2") for _, m in calls)


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_cancellation_raises(n_jobs):
    xy, weights = grid(40)
    polls = []

    def is_cancelled():
        polls.append(threading.get_ident())
        return len(polls) > 3

    with pytest.raises(ClusteringCancelled):
        TunedClustering(50, 200, n_jobs=n_jobs).fit(xy, weights, is_cancelled=is_cancelled)
    # Only the calling thread is ever asked.
    assert set(polls) == {threading.get_ident()}


def test_not_cancelled_runs_to_the_end():
    xy, weights = grid(15)
    result = TunedClustering(50, 200).fit(xy, weights, is_cancelled=lambda: False)
    assert result.n_clusters >= 1


def test_concurrent_fits_on_threads_agree():
    xy, weights = grid(25)
    estimator = TunedClustering(60, 300)
    expected = estimator.fit(xy, weights).labels
    results: list[np.ndarray] = []
    threads = [
        threading.Thread(target=lambda: results.append(estimator.fit(xy, weights).labels))
        for _ in range(3)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 3 and all(np.array_equal(r, expected) for r in results)


# -- validation ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "match"),
    [
        (dict(desired_cluster_weight=0), "desired_cluster_weight must be a positive"),
        (dict(desired_cluster_weight=-5), "desired_cluster_weight"),
        (dict(desired_cluster_weight=float("nan")), "desired_cluster_weight"),
        (dict(desired_cluster_radius=0), "desired_cluster_radius must be a positive"),
        (dict(desired_cluster_radius=float("inf")), "desired_cluster_radius"),
        (dict(desired_cluster_radius="1000"), "desired_cluster_radius"),
        (dict(weight_importance_factor=-1), "weight_importance_factor"),
        (dict(max_cluster_weight=100), "below desired_cluster_weight"),
        (dict(max_cluster_weight=0), "max_cluster_weight must be a positive"),
        (dict(max_passes=3), "max_cluster_weight is not set"),
        (dict(max_passes=0), "max_passes"),
        (dict(max_passes=1.5), "max_passes"),
        (dict(initial_max_trials=0), "initial_max_trials"),
        (dict(subsequent_max_trials=0), "subsequent_max_trials"),
        (dict(n_jobs=0), "n_jobs"),
        (dict(n_jobs=-2), "n_jobs"),
        (dict(n_jobs=True), "n_jobs"),
        (dict(random_state=-1), "random_state"),
    ],
)
def test_invalid_parameters_are_rejected(params, match):
    arguments = dict(desired_cluster_weight=240, desired_cluster_radius=1000)
    arguments.update(params)
    with pytest.raises(ClusteringInputError, match=match):
        TunedClustering(**arguments)


def test_parameters_changed_after_construction_are_checked_at_fit():
    estimator = TunedClustering(240, 1000)
    estimator.n_jobs = 0
    with pytest.raises(ClusteringInputError, match="n_jobs"):
        estimator.fit([[0.0, 0.0]])


@pytest.mark.parametrize(
    ("xy", "weights", "match"),
    [
        (np.empty((0, 2)), None, "empty"),
        ([], None, "empty"),
        (np.zeros((4, 3)), None, r"shape \(n, 2\)"),
        (np.zeros(4), None, r"shape \(n, 2\)"),
        ([[0.0, 0.0], [np.nan, 1.0]], None, "missing or infinite coordinates"),
        ([[0.0, 0.0], [np.inf, 1.0]], None, "missing or infinite coordinates"),
        ([["a", "b"]], None, "could not be read"),
        (np.zeros((2, 2)), [1.0, -1.0], "negative"),
        (np.zeros((2, 2)), [1.0, np.nan], "missing"),
        (np.zeros((2, 2)), [1.0, np.inf], "infinite"),
        (np.zeros((2, 2)), [0.0, 0.0], "All weights are zero"),
        (np.zeros((2, 2)), [1.0, 2.0, 3.0], "3 values for 2 units"),
    ],
)
def test_invalid_data_is_rejected(xy, weights, match):
    with pytest.raises(ClusteringInputError, match=match):
        TunedClustering(240, 1000).fit(xy, weights)


def test_every_error_message_says_how_to_fix_it():
    with pytest.raises(ClusteringInputError) as info:
        TunedClustering(240, 1000, max_passes=4)
    assert "Set max_cluster_weight" in str(info.value)


def test_degree_like_coordinates_warn():
    lonlat = np.array([[125.38, 8.0], [125.39, 8.01], [125.40, 8.02]])
    with pytest.warns(UserWarning, match="degrees"):
        TunedClustering(1, 1000).fit(lonlat)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        TunedClustering(1, 1000).fit(lonlat * 100_000)  # metres: no warning


# -- properties ------------------------------------------------------------------


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    n=st.integers(1, 120),
    seed=st.integers(0, 2**16),
    desired_weight=st.floats(0.5, 50),
    desired_radius=st.floats(10, 5000),
    max_passes=st.integers(1, 4),
)
def test_every_unit_in_exactly_one_cluster(n, seed, desired_weight, desired_radius, max_passes):
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 3000, size=(n, 2)) + [400_000.0, 2_000_000.0]
    if seed % 3 == 0:
        xy = np.round(xy / 250) * 250  # duplicates
    weights = rng.exponential(2.0, size=n)
    weights[rng.random(n) < 0.2] = 0.0
    if weights.sum() == 0:
        weights[0] = 1.0
    result = TunedClustering(
        desired_cluster_weight=desired_weight,
        desired_cluster_radius=desired_radius,
        max_cluster_weight=desired_weight * 1.25 if max_passes > 1 else None,
        max_passes=max_passes,
        initial_max_trials=6,
        subsequent_max_trials=4,
        random_state=seed,
    ).fit(xy, weights)
    check_contract(result, xy, weights)
    assert (result.trials.groupby(["pass", "parent_id"], dropna=False).size() <= 6).all()


# -- the shared benchmark data -----------------------------------------------------

SHARED_GPKG = Path(__file__).resolve().parents[3] / "shared" / "data" / "ph_grid_points.gpkg"


def _ph_grids() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lon/Lat, population and EPSG:3121 metres of the 69,226 ph_grids cells."""
    import sqlite3

    from tuned_grid_clustering.core import project_to_metric

    with sqlite3.connect(f"file:{SHARED_GPKG}?mode=ro", uri=True) as connection:
        rows = connection.execute("SELECT Lon, Lat, population FROM grid_points").fetchall()
    lon, lat, population = np.asarray(rows, dtype=float).T
    xy, _ = project_to_metric(lon, lat, 4326, 3121)
    return np.column_stack([lon, lat]), population, xy


@pytest.mark.skipif(not SHARED_GPKG.exists(), reason="../shared/data is not available")
def test_ph_grids_with_the_original_parameters():
    _, population, xy = _ph_grids()
    result = TunedClustering(
        desired_cluster_weight=240,
        desired_cluster_radius=1000,
        max_cluster_weight=300,
        max_passes=100,
        contiguity=False,
    ).fit(xy, population)
    check_contract(result, xy, population)
    clusters = result.clusters
    assert 60 <= result.n_clusters <= 160
    assert clusters["pass"].max() >= 2
    # Whatever is still over the maximum was judged best kept whole (k = 1).
    assert (clusters["weight"] > 300).sum() <= 5
    assert clusters["radius_m"].max() < 5000


@pytest.mark.skipif(not SHARED_GPKG.exists(), reason="../shared/data is not available")
def test_ph_grids_guaranteed_psus_meet_the_original_tail():
    # Issue #4's targets, with the benchmark's settings (bench/bench_ph_grids.py).
    from tuned_grid_clustering.core.adjacency import build_adjacency

    lonlat, population, xy = _ph_grids()
    graph = build_adjacency(lonlat, xy_metric=xy).matrix
    result = TunedClustering(
        desired_cluster_weight=240,
        desired_cluster_radius=1000,
        max_cluster_weight=300,
        max_passes=100,
        min_cluster_weight=180,
        max_cluster_radius=2800,
        random_state=42,
    ).fit(xy, population, adjacency=graph)
    check_contract(result, xy, population)
    radius = result.clusters["radius_m"].to_numpy()
    assert result.quality["share_in_range"] == 1.0
    assert result.quality["share_contiguous"] == 1.0
    assert np.percentile(radius, 90) <= 2800
    assert radius.max() <= 3900


# ---------------------------------------------------------------------------
# k-means internals: the fast paths give the same answers as the plain ones
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
def test_nearest_centre_search_is_exact(seed):
    from tuned_grid_clustering.core import tuned

    rng = np.random.default_rng(seed)
    k = int(rng.integers(2, 60))
    centres = rng.uniform(0, 10_000, size=(k, 2))
    points = rng.uniform(-500, 10_500, size=(3000, 2))
    guess = rng.integers(0, k, size=points.shape[0])  # poor guesses: fallbacks too
    first, lower, nearest = tuned._CentreNeighbours(centres).nearest(points, guess)
    distance = np.sqrt(((points[:, None, :] - centres[None, :, :]) ** 2).sum(axis=2))
    order = np.sort(distance, axis=1)
    assert np.allclose(first, order[:, 0])
    assert np.allclose(distance[np.arange(points.shape[0]), nearest], order[:, 0])
    second = order[:, 1] if k > 1 else np.full(points.shape[0], np.inf)
    assert np.all(lower <= second + 1e-9)  # a lower bound on any other centre


@pytest.mark.parametrize("seed", range(4))
def test_dense_and_bounded_lloyd_agree(seed, monkeypatch):
    from tuned_grid_clustering.core import tuned

    rng = np.random.default_rng(seed)
    points = rng.normal(size=(2500, 2)) * 3000
    weights = rng.uniform(0.5, 3.0, size=2500)
    start = points[rng.choice(2500, 25, replace=False)]
    tolerance = 1e-3 * float(points.var(axis=0).mean())

    def run(limit):
        monkeypatch.setattr(tuned, "_DENSE_LLOYD_LIMIT", limit)
        return tuned._lloyd(points, weights, start.copy(), tolerance, lambda: None)

    dense_centres, dense_labels = run(10**12)
    bounded_centres, bounded_labels = run(0)
    assert np.allclose(dense_centres, bounded_centres, rtol=0, atol=1e-6)
    assert np.array_equal(dense_labels, bounded_labels)


def test_unit_assignment_is_the_nearest_final_centre():
    from tuned_grid_clustering.core import tuned

    rng = np.random.default_rng(5)
    xy = np.round(rng.uniform(0, 20_000, size=(20_000, 2)) / 100) * 100
    weights = rng.uniform(0, 50, size=20_000)
    units = tuned._Units(xy, weights, 1000 / 3, 40, (42,))
    assert units.compressed
    labels, n_clusters = tuned._kmeans_labels(units, 40, lambda: None)
    assert n_clusters == 40
    # Every unit sits with its nearest centre (the weighted mean of its cluster
    # is not the centre here; recompute the centres k-means ended with).
    centres = units.initial_centres(40, lambda: None)
    centres, guess = tuned._lloyd(
        units.cell_xy, units.cell_weight, centres, units.tolerance, lambda: None
    )
    nearest = np.argmin(((units.xy[:, None, :] - centres[None]) ** 2).sum(axis=2), axis=1)
    assert np.array_equal(np.unique(nearest, return_inverse=True)[1].reshape(-1), labels)
