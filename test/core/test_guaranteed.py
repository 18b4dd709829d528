"""Guaranteed PSUs through the engine: TunedClustering with its refinement step.

Small constructed grids (islands, a heavy cell, a river gap, a ring town)
with known answers; the ID and pass rules; the quality figures; validation;
a property test through ``TunedClustering.fit``; determinism across n_jobs.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import sparse

from tuned_grid_clustering.core import ClusteringCancelled, ClusteringInputError, TunedClustering
from tuned_grid_clustering.core.adjacency import Lattice, lattice_adjacency
from tuned_grid_clustering.core.geometry import cluster_radii
from tuned_grid_clustering.core.refine import (
    STATUS_ISLAND_UNDER_MIN,
    STATUS_OK,
    STATUS_PRECEDENCE,
    STATUS_SINGLE_UNIT_OVER_MAX,
    cluster_connectivity,
)

SPACING = 100.0  # metres between grid cells
ORIGIN = np.array([500_000.0, 1_000_000.0])  # metric, far from anything degree-like
QUALITY_KEYS = {
    "share_in_range",
    "share_contiguous",
    "share_within_radius",
    "share_ok",
    "status_counts",
    "adjacency",
}


def grid(n_cols: int, n_rows: int, keep=None) -> np.ndarray:
    """Cell centres of an n_cols x n_rows grid (metres), optionally filtered by (col, row)."""
    cols, rows = np.meshgrid(np.arange(n_cols), np.arange(n_rows))
    cells = np.column_stack([cols.ravel(), rows.ravel()]).astype(float)
    if keep is not None:
        cells = cells[keep(cells[:, 0], cells[:, 1])]
    return cells * SPACING + ORIGIN


def queen(xy: np.ndarray) -> sparse.csr_matrix:
    """8-neighbour graph on the SPACING lattice (given: a sparse subset may hide it)."""
    cells = np.rint((xy - ORIGIN) / SPACING).astype(int)
    lattice = Lattice(
        ORIGIN[0], ORIGIN[1], SPACING, SPACING, cells[:, 0].max() + 1, cells[:, 1].max() + 1
    )
    return lattice_adjacency(xy, lattice=lattice).matrix


def check(
    result,
    xy,
    weights,
    adjacency,
    *,
    min_weight=None,
    max_weight=None,
    max_radius=None,
    contiguity=True,
):
    """Invariants of a refined result; returns the clusters table."""
    n = xy.shape[0]
    clusters = result.clusters
    k = len(clusters)
    labels = result.labels
    # A partition: every unit in exactly one cluster, every cluster with units.
    assert labels.shape == (n,)
    assert labels.min() == 0 and labels.max() == k - 1
    counts = np.bincount(labels, minlength=k)
    assert np.array_equal(counts, clusters["n_units"].to_numpy())
    assert (counts > 0).all() and counts.sum() == n
    cluster_weight = np.bincount(labels, weights, minlength=k)
    assert np.allclose(clusters["weight"], cluster_weight)
    assert np.allclose(clusters["radius_m"], cluster_radii(xy, labels, k))
    # IDs: unique, sorted, hierarchical; per unit consistent with the table.
    ids = clusters["cluster_id"]
    assert ids.is_unique and ids.tolist() == sorted(ids)
    assert all(re.fullmatch(r"CLUSTER_\d{3,}(_\d{2,})*", cid) for cid in ids)
    assert (ids.to_numpy()[labels] == result.cluster_ids).all()
    assert (clusters["pass"].to_numpy()[labels] == result.cluster_pass).all()
    assert all(c.count("_") <= p for c, p in zip(ids, clusters["pass"]))
    # Contiguity is hard.
    connected = cluster_connectivity(labels, adjacency)
    if contiguity:
        assert connected.all()
    # status ok => every constraint holds.
    status = clusters["status"].to_numpy()
    assert set(status) <= set(STATUS_PRECEDENCE)
    ok = status == STATUS_OK
    low = -np.inf if min_weight is None else min_weight
    high = np.inf if max_weight is None else max_weight
    in_range = (cluster_weight >= low) & (cluster_weight <= high)
    assert in_range[ok].all()
    if max_radius is not None:
        assert (clusters["radius_m"].to_numpy()[ok] <= max_radius + 1e-9).all()
    single = status == STATUS_SINGLE_UNIT_OVER_MAX
    assert (counts[single] == 1).all() and (cluster_weight[single] > high).all()
    # Quality figures agree with the table.
    quality = result.quality
    assert set(quality) >= QUALITY_KEYS
    assert quality["share_ok"] == pytest.approx(ok.mean())
    assert quality["share_in_range"] == pytest.approx(in_range.mean())
    assert quality["share_contiguous"] == pytest.approx(connected.mean())
    assert quality["status_counts"] == pd.Series(status).value_counts().to_dict()
    return clusters


def fit(xy, weights, adjacency="queen", **params):
    params.setdefault("initial_max_trials", 8)
    if isinstance(adjacency, str):
        adjacency = queen(xy)
    return TunedClustering(**params).fit(xy, weights, adjacency=adjacency)


def side_count(labels: np.ndarray, left: np.ndarray) -> int:
    """Number of clusters with units on both sides of a split."""
    return len(set(labels[left].tolist()) & set(labels[~left].tolist()))


# -- constructed grids ------------------------------------------------------------


def test_light_island_is_one_cluster_flagged_and_the_rest_ok():
    # A 2x2 island (weight 4) three empty columns left of an 8x6 block (48).
    xy = grid(13, 6, keep=lambda c, r: ((c < 2) & (r < 2)) | (c >= 5))
    weights = np.ones(len(xy))
    limits = dict(min_cluster_weight=10, max_cluster_weight=20)
    result = fit(xy, weights, desired_cluster_weight=15, desired_cluster_radius=200, **limits)
    clusters = check(result, xy, weights, queen(xy), min_weight=10, max_weight=20)
    island = xy[:, 0] < ORIGIN[0] + 200
    assert len(set(result.labels[island].tolist())) == 1
    assert side_count(result.labels, island) == 0
    status = clusters["status"].to_numpy()
    assert status[result.labels[island][0]] == STATUS_ISLAND_UNDER_MIN
    assert (np.delete(status, result.labels[island][0]) == STATUS_OK).all()


def test_bridge_distance_lets_a_light_island_join_a_psu():
    # The island of the test above, 400 m from the block: bridged within 500 m.
    xy = grid(13, 6, keep=lambda c, r: ((c < 2) & (r < 2)) | (c >= 5))
    weights = np.ones(len(xy))
    limits = dict(min_cluster_weight=10, max_cluster_weight=20)
    params = dict(desired_cluster_weight=15, desired_cluster_radius=200, **limits)
    bridged = fit(xy, weights, bridge_distance=500, **params)
    assert bridged.quality["bridges"] == 1
    assert (bridged.clusters["status"] == STATUS_OK).all()
    island = xy[:, 0] < ORIGIN[0] + 200
    assert side_count(bridged.labels, island) == 1  # the island shares a PSU
    # A gap longer than the bridge distance stays a boundary.
    kept = fit(xy, weights, bridge_distance=250, **params)
    assert kept.quality["bridges"] == 0
    assert STATUS_ISLAND_UNDER_MIN in set(kept.clusters["status"])


def test_bridges_never_join_pieces_heavy_enough_to_stand_alone():
    xy = grid(11, 6, keep=lambda c, r: c != 4)  # a river column between two towns
    weights = np.ones(len(xy))
    left = xy[:, 0] < ORIGIN[0] + 400
    result = fit(
        xy,
        weights,
        desired_cluster_weight=20,
        desired_cluster_radius=300,
        min_cluster_weight=14,
        max_cluster_weight=26,
        bridge_distance=1000,
    )
    assert result.quality["bridges"] == 0
    assert side_count(result.labels, left) == 0


def test_heavy_cell_is_alone_and_flagged():
    xy = grid(6, 6)
    weights = np.ones(len(xy))
    heavy = 14  # an inner cell
    weights[heavy] = 50.0
    result = fit(
        xy,
        weights,
        desired_cluster_weight=9,
        desired_cluster_radius=150,
        min_cluster_weight=6,
        max_cluster_weight=12,
    )
    clusters = check(result, xy, weights, queen(xy), min_weight=6, max_weight=12)
    code = result.labels[heavy]
    assert np.sum(result.labels == code) == 1
    status = clusters["status"].to_numpy()
    assert status[code] == STATUS_SINGLE_UNIT_OVER_MAX
    assert (np.delete(status, code) == STATUS_OK).all()


def test_river_gap_is_never_crossed_with_the_graph_built_from_xy():
    # An empty column: the river. k-means alone crosses it (200 m).
    xy = grid(11, 6, keep=lambda c, r: c != 4)
    weights = np.ones(len(xy))
    left = xy[:, 0] < ORIGIN[0] + 400
    plain = TunedClustering(20, 300, initial_max_trials=1, contiguity=False).fit(xy, weights)
    result = TunedClustering(
        20, 300, initial_max_trials=1, min_cluster_weight=14, max_cluster_weight=26
    ).fit(xy, weights)  # no adjacency: built here (a lattice: the grid is regular)
    assert result.quality["adjacency"].startswith("lattice adjacency")
    check(result, xy, weights, queen(xy), min_weight=14, max_weight=26)
    assert side_count(plain.labels, left) > 0
    assert side_count(result.labels, left) == 0
    assert (result.clusters["status"] == STATUS_OK).all()


def test_ring_town_gives_connected_arcs():
    centre = 7.0

    def ring(c, r):
        distance = np.hypot(c - centre, r - centre)
        return (distance >= 4) & (distance <= 6)

    xy = grid(15, 15, keep=ring)
    weights = np.ones(len(xy))
    target = weights.sum() / 6
    result = fit(
        xy,
        weights,
        desired_cluster_weight=target,
        desired_cluster_radius=300,
        min_cluster_weight=0.8 * target,
        max_cluster_weight=1.2 * target,
    )
    check(result, xy, weights, queen(xy), min_weight=0.8 * target, max_weight=1.2 * target)
    assert (result.clusters["status"] == STATUS_OK).all()
    assert 5 <= result.n_clusters <= 7
    # Arcs: no cluster holds cells from opposite sides of the ring.
    cells = (xy - ORIGIN) / SPACING - centre
    angle = np.arctan2(cells[:, 1], cells[:, 0])
    for code in range(result.n_clusters):
        members = angle[result.labels == code]
        spread = np.angle(np.exp(1j * (members - members[0])))
        assert np.ptp(spread) < math.pi


def test_radius_cap_and_weight_range_on_a_varied_grid():
    rng = np.random.default_rng(3)
    xy = grid(30, 30)
    weights = rng.gamma(0.8, 2.0, len(xy))
    limits = dict(min_cluster_weight=45, max_cluster_weight=80, max_cluster_radius=700)
    result = fit(xy, weights, desired_cluster_weight=60, desired_cluster_radius=400, **limits)
    clusters = check(result, xy, weights, queen(xy), min_weight=45, max_weight=80, max_radius=700)
    assert result.quality["share_ok"] >= 0.95
    assert result.quality["share_in_range"] == 1.0
    assert (clusters["radius_m"] <= 700 + 1e-9).mean() >= 0.95


def test_without_contiguity_the_weight_range_still_holds():
    rng = np.random.default_rng(5)
    xy = grid(20, 20)
    weights = rng.gamma(1.0, 1.0, len(xy))
    result = fit(
        xy,
        weights,
        desired_cluster_weight=40,
        desired_cluster_radius=300,
        min_cluster_weight=30,
        max_cluster_weight=50,
        contiguity=False,
    )
    check(result, xy, weights, queen(xy), min_weight=30, max_weight=50, contiguity=False)
    assert result.quality["share_in_range"] == 1.0


# -- IDs and passes -----------------------------------------------------------------


def test_ids_and_passes_follow_the_refinement_rules():
    rng = np.random.default_rng(8)
    xy = grid(24, 24)
    weights = rng.gamma(0.7, 2.0, len(xy))
    base = dict(
        desired_cluster_weight=60,
        desired_cluster_radius=300,
        max_cluster_weight=80,
        max_passes=3,
        initial_max_trials=8,
        subsequent_max_trials=4,
    )
    plain = TunedClustering(**base, contiguity=False).fit(xy, weights)
    result = TunedClustering(**base, min_cluster_weight=45, max_cluster_radius=600).fit(
        xy, weights, adjacency=queen(xy)
    )
    check(result, xy, weights, queen(xy), min_weight=45, max_weight=80, max_radius=600)
    refinement_pass = int(plain.trials["pass"].max()) + 1
    plain_ids = plain.clusters["cluster_id"].tolist()
    plain_of_members = {
        frozenset(np.flatnonzero(plain.labels == code).tolist()): (cid, p)
        for code, (cid, p) in enumerate(zip(plain_ids, plain.clusters["pass"]))
    }
    children: dict[str, list[tuple[int, str]]] = {}
    n_unchanged = 0
    for code, (cid, p) in enumerate(zip(result.clusters["cluster_id"], result.clusters["pass"])):
        members = np.flatnonzero(result.labels == code)
        same = plain_of_members.get(frozenset(members.tolist()))
        if same is not None:  # unchanged: keeps its id and pass
            assert (cid, p) == same
            n_unchanged += 1
            continue
        assert p == refinement_pass
        parent = cid if cid in plain_ids else cid.rsplit("_", 1)[0]
        assert parent in plain_ids
        # The parent gives the cluster most of its weight.
        overlap = np.bincount(plain.labels[members], weights[members], minlength=len(plain_ids))
        assert overlap[plain_ids.index(parent)] == pytest.approx(overlap.max())
        children.setdefault(parent, []).append((int(members[0]), cid))
    assert n_unchanged < result.n_clusters  # the refinement changed something
    for parent, kids in children.items():
        if len(kids) == 1:
            assert kids[0][1] == parent  # an only child keeps the parent's id
        else:  # siblings are numbered _01, _02... in the order of their first unit
            expected = [f"{parent}_{i:02d}" for i in range(1, len(kids) + 1)]
            assert [cid for _, cid in sorted(kids)] == expected


def test_same_result_whatever_n_jobs_with_refinement():
    rng = np.random.default_rng(2)
    xy = grid(28, 28)
    weights = rng.gamma(0.6, 2.0, len(xy))
    params = dict(
        desired_cluster_weight=50,
        desired_cluster_radius=250,
        min_cluster_weight=35,
        max_cluster_weight=70,
        max_cluster_radius=600,
        max_passes=4,
        initial_max_trials=10,
        subsequent_max_trials=5,
    )
    one = TunedClustering(**params, n_jobs=1).fit(xy, weights)
    for n_jobs in (2, -1, 1):
        other = TunedClustering(**params, n_jobs=n_jobs).fit(xy, weights)
        assert np.array_equal(one.labels, other.labels)
        assert (one.cluster_ids == other.cluster_ids).all()
        pd.testing.assert_frame_equal(one.clusters, other.clusters)
        pd.testing.assert_frame_equal(one.trials, other.trials)
        assert one.quality == other.quality


# -- quality without refinement, adjacency building ------------------------------------


def test_quality_is_present_without_refinement():
    rng = np.random.default_rng(1)
    xy = grid(15, 15)
    weights = rng.gamma(1.0, 1.0, len(xy))
    params = dict(desired_cluster_weight=20, desired_cluster_radius=200, contiguity=False)
    result = TunedClustering(**params, max_cluster_weight=25).fit(xy, weights)
    quality = result.quality
    assert set(quality) >= QUALITY_KEYS
    assert quality["share_contiguous"] is None and quality["adjacency"] is None
    assert quality["share_within_radius"] == 1.0
    over = result.clusters["weight"] > 25
    assert quality["share_in_range"] == pytest.approx(1 - over.mean())
    assert quality["status_counts"].get("over_max", 0) == over.sum()
    assert set(result.clusters["status"]) <= {"ok", "over_max"}
    # With a graph, contiguity is measured (not enforced).
    measured = TunedClustering(**params).fit(xy, weights, adjacency=queen(xy))
    connected = cluster_connectivity(measured.labels, queen(xy))
    assert measured.quality["share_contiguous"] == pytest.approx(connected.mean())
    assert np.array_equal(measured.labels, TunedClustering(**params).fit(xy, weights).labels)


def test_irregular_points_get_a_distance_graph():
    rng = np.random.default_rng(4)
    xy = rng.uniform(0, 3000, (400, 2)) + ORIGIN
    result = TunedClustering(40, 400, initial_max_trials=6).fit(xy)
    quality = result.quality
    assert quality["adjacency"].startswith("distance adjacency")
    assert quality["neighbour_distance"] > 0
    chosen = TunedClustering(40, 400, initial_max_trials=6, neighbour_distance=250.0).fit(xy)
    assert chosen.quality["neighbour_distance"] == 250.0


def test_lon_lat_grid_needs_xy_source_for_a_lattice():
    from tuned_grid_clustering.core import project_to_metric

    cols, rows = np.meshgrid(np.arange(30), np.arange(25))
    lon = 125.4 + cols.ravel() / 1200.0
    lat = 8.0 + rows.ravel() / 1200.0
    xy, _ = project_to_metric(lon, lat, "EPSG:4326", "EPSG:3121")
    weights = np.random.default_rng(0).gamma(1.0, 1.0, len(xy))
    lonlat = np.column_stack([lon, lat])
    estimator = TunedClustering(40, 300, initial_max_trials=6, min_cluster_weight=30)
    result = estimator.fit(xy, weights, xy_source=lonlat)
    assert result.quality["adjacency"].startswith("lattice adjacency (8 neighbours")
    assert "neighbour_distance" not in result.quality
    assert result.quality["share_contiguous"] == 1.0
    projected_only = estimator.fit(xy, weights)
    assert projected_only.quality["adjacency"].startswith("distance adjacency")


def test_single_unit_and_all_in_one_cluster():
    result = TunedClustering(240, 1000, min_cluster_weight=180).fit(ORIGIN[None, :], [12.5])
    assert result.clusters["cluster_id"].tolist() == ["CLUSTER_001"]
    assert result.clusters["status"].tolist() == [STATUS_ISLAND_UNDER_MIN]
    assert result.quality["share_ok"] == 0.0


# -- progress and cancellation --------------------------------------------------------


def test_refinement_reports_progress_to_the_end():
    xy = grid(20, 20)
    weights = np.random.default_rng(6).gamma(1.0, 1.0, len(xy))
    calls: list[tuple[float, str]] = []
    TunedClustering(30, 200, min_cluster_weight=20, max_cluster_weight=40).fit(
        xy, weights, progress=lambda f, m: calls.append((f, m))
    )
    fractions = [f for f, _ in calls]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    refining = [f for f, m in calls if m.startswith("Refinement")]
    assert refining and min(refining) >= 0.5 and max(refining) <= 0.95


def test_cancellation_during_the_refinement():
    xy = grid(20, 20)
    weights = np.random.default_rng(6).gamma(1.0, 1.0, len(xy))
    state = {"message": "", "polls": 0}

    def progress(fraction, message):
        state["message"] = message

    def is_cancelled():
        if state["message"].startswith("Refinement"):
            state["polls"] += 1
        return state["polls"] > 2  # after the refinement has started

    estimator = TunedClustering(30, 200, min_cluster_weight=20, max_cluster_weight=40)
    with pytest.raises(ClusteringCancelled):
        estimator.fit(xy, weights, progress=progress, is_cancelled=is_cancelled)
    assert state["polls"] == 3


# -- validation -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "match"),
    [
        (dict(min_cluster_weight=300), "min_cluster_weight .* is above desired"),
        (dict(min_cluster_weight=0), "min_cluster_weight must be a positive"),
        (dict(min_cluster_weight=float("nan")), "min_cluster_weight"),
        (dict(max_cluster_radius=0), "max_cluster_radius must be a positive"),
        (dict(max_cluster_radius=-5.0), "max_cluster_radius"),
        (dict(neighbour_distance=0), "neighbour_distance must be a positive"),
        (dict(neighbour_distance="far"), "neighbour_distance"),
        (dict(bridge_distance=-1), "bridge_distance"),
        (dict(contiguity="yes"), "contiguity must be True or False"),
        (dict(max_cluster_weight=200), "below desired_cluster_weight"),
    ],
)
def test_invalid_refinement_parameters_are_rejected(params, match):
    with pytest.raises(ClusteringInputError, match=match):
        TunedClustering(240, 1000, **params)


def test_min_equal_desired_equal_max_is_allowed():
    estimator = TunedClustering(240, 1000, min_cluster_weight=240, max_cluster_weight=240)
    assert estimator.refines and estimator.get_params()["min_cluster_weight"] == 240


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(adjacency=sparse.identity(3, format="csr")), r"adjacency must have shape \(4, 4\)"),
        (dict(adjacency=np.ones(4)), r"adjacency must have shape \(4, 4\)"),
        (dict(adjacency=[["a"] * 4] * 4), "adjacency could not be read"),
        (dict(xy_source=np.zeros((3, 2))), r"xy_source must be finite with shape \(4, 2\)"),
        (dict(xy_source=[[0.0, np.nan]] * 4), "xy_source must be finite"),
    ],
)
def test_invalid_adjacency_or_source_is_rejected(kwargs, match):
    xy = grid(2, 2)
    with pytest.raises(ClusteringInputError, match=match):
        TunedClustering(2, 100).fit(xy, **kwargs)


def test_dense_adjacency_is_accepted():
    xy = grid(4, 4)
    dense = queen(xy).toarray()
    result = TunedClustering(4, 100, initial_max_trials=3).fit(xy, adjacency=dense)
    assert result.quality["adjacency"] == "adjacency given by the caller"
    assert result.quality["share_contiguous"] == 1.0


# -- property -----------------------------------------------------------------------------


@st.composite
def problems(draw):
    n_cols = draw(st.integers(2, 10))
    n_rows = draw(st.integers(1, 8))
    cells = n_cols * n_rows
    present = np.array(draw(st.lists(st.booleans(), min_size=cells, max_size=cells)))
    if not present.any():
        present[0] = True
    keep = present.reshape(n_rows, n_cols)
    xy = grid(n_cols, n_rows, keep=lambda c, r: keep[r.astype(int), c.astype(int)])
    n = xy.shape[0]
    weights = np.array(draw(st.lists(st.integers(0, 6), min_size=n, max_size=n)), float)
    if weights.sum() == 0:
        weights[0] = 1.0
    target = draw(st.floats(3.0, 25.0))
    params = dict(
        desired_cluster_weight=target,
        desired_cluster_radius=draw(st.floats(50.0, 800.0)),
        min_cluster_weight=draw(
            st.one_of(st.none(), st.floats(0.5, 1.0).map(lambda f: f * target))
        ),
        max_cluster_weight=draw(
            st.one_of(st.none(), st.floats(1.0, 2.0).map(lambda f: f * target))
        ),
        max_cluster_radius=draw(st.one_of(st.none(), st.floats(50.0, 600.0))),
        initial_max_trials=draw(st.integers(1, 6)),
        subsequent_max_trials=3,
        random_state=draw(st.integers(0, 1000)),
    )
    if params["max_cluster_weight"] is not None:
        params["max_passes"] = draw(st.integers(1, 3))
    return xy, weights, params


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problems())
def test_property_fit_gives_connected_partition_and_ok_means_ok(problem):
    xy, weights, params = problem
    result = fit(xy, weights, **params)
    check(
        result,
        xy,
        weights,
        queen(xy),
        min_weight=params["min_cluster_weight"],
        max_weight=params["max_cluster_weight"],
        max_radius=params["max_cluster_radius"],
    )


# -- partitions ------------------------------------------------------------------------------


def test_partitions_refine_each_partition_on_its_own_graph():
    from tuned_grid_clustering.core.partitions import cluster_partitions

    rng = np.random.default_rng(9)
    xy = grid(20, 12)
    weights = rng.gamma(1.0, 1.0, len(xy))
    partitions = np.where(xy[:, 0] < ORIGIN[0] + 1000, "west", "east")
    params = dict(
        desired_cluster_weight=25,
        desired_cluster_radius=250,
        min_cluster_weight=18,
        max_cluster_weight=32,
        initial_max_trials=6,
    )
    result = cluster_partitions(
        xy,
        weights,
        partitions,
        params=params,
        n_jobs=2,
        fit_kwargs={"adjacency": queen(xy)},
    )
    assert not result.failed
    assert "status" in result.clusters.columns
    for key, outcome in result.outcomes.items():
        rows = np.flatnonzero(partitions == key)
        sub = outcome.result
        check(sub, xy[rows], weights[rows], queen(xy[rows]), min_weight=18, max_weight=32)
        assert sub.quality["adjacency"] == "adjacency given by the caller"
