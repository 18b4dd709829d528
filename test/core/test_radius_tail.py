"""Step 6 of the refinement: fewer clusters over the radius cap (core/radius_tail.py)."""

from __future__ import annotations

import numpy as np
import pytest

from tuned_grid_clustering.core.adjacency import build_adjacency
from tuned_grid_clustering.core.geometry import cluster_radii
from tuned_grid_clustering.core.pieces import edge_rows
from tuned_grid_clustering.core.radius_tail import fewer_over_cap
from tuned_grid_clustering.core.refine import cluster_connectivity, refine_partition

LOW, HIGH = 45.0, 75.0


def _sparse_towards_one_edge(seed: int):
    """A 80 x 50 lattice (100 m), a tenth of the cells empty, people thinning out to the north.

    Returns the units, their graph and a refined partition (weight in range,
    connected) before any radius cap.
    """
    rng = np.random.default_rng(seed)
    x, y = np.meshgrid(np.arange(80) * 100.0, np.arange(50) * 100.0, indexing="ij")
    xy = np.column_stack([x.ravel(), y.ravel()])
    xy = xy[rng.random(len(xy)) < 0.9]
    north = xy[:, 1] / xy[:, 1].max()
    weights = (0.15 + 3.0 * (1 - north) ** 3) * rng.uniform(0.5, 1.5, len(xy))
    graph = build_adjacency(xy).matrix.tocsr()
    start = (xy[:, 0] // 1000).astype(int) * 10 + (xy[:, 1] // 1000).astype(int)
    labels = refine_partition(
        start, xy, weights, graph, target_weight=60, min_weight=LOW, max_weight=HIGH
    ).labels
    return xy, weights, graph, labels


def _subgraph(graph):
    def subgraph(units):
        sub = graph[units][:, units].tocsr()
        return sub.indptr, sub.indices, edge_rows(sub.indptr), 0

    return subgraph


def _step(xy, weights, graph, labels, cap):
    radii = cluster_radii(xy, labels, int(labels.max()) + 1)
    csr = (graph.indptr, graph.indices)
    outcome = fewer_over_cap(
        labels, radii, xy, weights, csr, cap=cap, low=LOW, high=HIGH, subgraph=_subgraph(graph)
    )
    return radii, outcome


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("share", [80, 90])
def test_never_worse_and_every_constraint_kept(seed, share):
    xy, weights, graph, labels = _sparse_towards_one_edge(seed)
    cap = float(np.percentile(cluster_radii(xy, labels, int(labels.max()) + 1), share))
    radii, outcome = _step(xy, weights, graph, labels, cap)
    if outcome is None:
        return  # nothing better found: the caller keeps its partition
    new_labels, new_radii = outcome
    # The same clusters, every unit in exactly one of them.
    assert new_labels.shape == labels.shape
    assert set(np.unique(new_labels)) == set(np.unique(labels))
    # The radii returned are the clusters' true radii.
    assert np.allclose(new_radii, cluster_radii(xy, new_labels, radii.size))
    # Fewer clusters over the cap; the widest no wider; weights in range; connected.
    assert (new_radii > cap).sum() < (radii > cap).sum()
    assert new_radii.max() <= radii.max() + 1e-6
    cluster_weight = np.bincount(new_labels, weights)
    assert np.all((cluster_weight >= LOW) & (cluster_weight <= HIGH))
    assert cluster_connectivity(new_labels, graph).all()


def test_fewer_clusters_over_the_cap_where_people_thin_out():
    xy, weights, graph, labels = _sparse_towards_one_edge(2)
    cap = float(np.percentile(cluster_radii(xy, labels, int(labels.max()) + 1), 90))
    radii, outcome = _step(xy, weights, graph, labels, cap)
    assert outcome is not None
    assert (outcome[1] > cap).sum() < (radii > cap).sum()


def test_the_same_input_gives_the_same_result():
    xy, weights, graph, labels = _sparse_towards_one_edge(2)
    cap = float(np.percentile(cluster_radii(xy, labels, int(labels.max()) + 1), 90))
    first = _step(xy, weights, graph, labels, cap)[1]
    second = _step(xy, weights, graph, labels, cap)[1]
    assert np.array_equal(first[0], second[0])
    assert np.array_equal(first[1], second[1])


def test_no_tail_when_a_third_of_the_clusters_exceed_the_cap():
    # The cap does not fit the data: step 6 leaves it to the pair re-cuts.
    xy, weights, graph, labels = _sparse_towards_one_edge(2)
    cap = float(np.percentile(cluster_radii(xy, labels, int(labels.max()) + 1), 66))
    assert _step(xy, weights, graph, labels, cap)[1] is None


def test_nothing_to_do_when_every_cluster_fits_the_cap():
    xy, weights, graph, labels = _sparse_towards_one_edge(0)
    radii = cluster_radii(xy, labels, int(labels.max()) + 1)
    assert _step(xy, weights, graph, labels, float(radii.max()) + 1.0)[1] is None


def test_long_thin_clusters_side_by_side_are_recut_across():
    # Ten stripes 400 m x 1200 m (radius 570 m) under a 500 m cap: no area
    # can move to a neighbour within its budget, so step 6 finds nothing and
    # the pair re-cuts take over: two stripes cut across make two 800 x 600 m
    # clusters (radius 430 m).
    x, y = np.meshgrid(np.arange(40) * 100.0, np.arange(12) * 100.0, indexing="ij")
    xy = np.column_stack([x.ravel(), y.ravel()])
    weights = np.ones(len(xy))
    stripes = np.arange(len(xy)) // 12 // 4
    graph = build_adjacency(xy).matrix
    radii, outcome = _step(xy, weights, graph, stripes, 500.0)
    assert (radii > 500).all() and outcome is None
    result = refine_partition(
        stripes, xy, weights, graph, target_weight=48, min_weight=40, max_weight=60, max_radius=500
    )
    assert result.summary.share_within_radius == 1.0
    assert result.summary.share_in_range == 1.0 and result.connected.all()


def test_many_clusters_take_candidates_from_a_kd_tree(monkeypatch):
    # Large wide parts look for candidate clusters among the nearest centres
    # only; the result keeps the same guarantees as the brute-force search.
    from tuned_grid_clustering.core import radius_tail

    xy, weights, graph, labels = _sparse_towards_one_edge(2)
    cap = float(np.percentile(cluster_radii(xy, labels, int(labels.max()) + 1), 90))
    monkeypatch.setattr(radius_tail, "_BRUTE_FORCE_PAIRS", 0)
    radii, outcome = _step(xy, weights, graph, labels, cap)
    assert outcome is not None
    new_labels, new_radii = outcome
    assert (new_radii > cap).sum() < (radii > cap).sum()
    assert new_radii.max() <= radii.max() + 1e-6
    cluster_weight = np.bincount(new_labels, weights)
    assert np.all((cluster_weight >= LOW) & (cluster_weight <= HIGH))
    assert cluster_connectivity(new_labels, graph).all()


def test_a_result_that_would_split_a_cluster_is_not_kept(monkeypatch):
    # Should step 6 ever leave a stray piece with no neighbour to rejoin
    # (here: stray pieces are never given back), the refinement keeps the
    # labels it had: contiguity is hard.
    from tuned_grid_clustering.core import radius_tail

    xy, weights, graph, labels = _sparse_towards_one_edge(2)
    cap = float(np.percentile(cluster_radii(xy, labels, int(labels.max()) + 1), 90))
    monkeypatch.setattr(radius_tail, "reattach_fragments", lambda *args: args[4])
    result = refine_partition(
        labels,
        xy,
        weights,
        graph,
        target_weight=60,
        min_weight=LOW,
        max_weight=HIGH,
        max_radius=cap,
    )
    assert result.connected.all()
