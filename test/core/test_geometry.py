"""Minimum enclosing circles: exactness against brute force, per-cluster batching."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from tuned_grid_clustering.core.geometry import (
    cluster_circles,
    cluster_radii,
    minimum_enclosing_circle,
)


def brute_force_radius(points: np.ndarray) -> float:
    """Smallest circle through 1, 2 (as diameter) or 3 points that encloses all."""
    pts = np.asarray(points, dtype=float)
    scale = max(1.0, float(np.abs(pts).max()))
    candidates = []
    for i, j in itertools.combinations(range(len(pts)), 2):
        centre = (pts[i] + pts[j]) / 2
        candidates.append((centre, np.linalg.norm(pts[i] - centre)))
    for i, j, k in itertools.combinations(range(len(pts)), 3):
        a, b, c = pts[i], pts[j], pts[k]
        det = 2 * ((b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0]))
        if abs(det) < 1e-9 * scale**2:
            continue
        b2, c2 = np.sum((b - a) ** 2), np.sum((c - a) ** 2)
        ux = ((c[1] - a[1]) * b2 - (b[1] - a[1]) * c2) / det
        uy = ((b[0] - a[0]) * c2 - (c[0] - a[0]) * b2) / det
        candidates.append((a + [ux, uy], math.hypot(ux, uy)))
    best = 0.0 if len(pts) == 1 or np.ptp(pts, axis=0).max() == 0 else math.inf
    for centre, radius in candidates:
        distance = np.linalg.norm(pts - centre, axis=1)
        if radius < best and np.all(distance <= radius * (1 + 1e-9) + 1e-9 * scale):
            best = radius
    return best


def assert_encloses(points: np.ndarray, circle: tuple[float, float, float]) -> None:
    cx, cy, r = circle
    distance = np.hypot(points[:, 0] - cx, points[:, 1] - cy)
    assert np.all(distance <= r * (1 + 1e-9) + 1e-6)


@pytest.mark.parametrize("seed", range(40))
def test_mec_matches_brute_force_on_random_sets(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 12))
    points = rng.normal(size=(n, 2)) * rng.choice([1.0, 1000.0])
    if seed % 4 == 0:
        points = np.round(points)  # duplicates and grid-like ties
    circle = minimum_enclosing_circle(points)
    assert circle[2] == pytest.approx(brute_force_radius(points), rel=1e-7, abs=1e-9)
    assert_encloses(points, circle)


@settings(max_examples=60, deadline=None)
@given(
    arrays(
        np.float64,
        st.tuples(st.integers(1, 9), st.just(2)),
        elements=st.floats(-1e4, 1e4, allow_nan=False, width=32),
    )
)
def test_mec_property_against_brute_force(points):
    circle = minimum_enclosing_circle(points)
    assert circle[2] == pytest.approx(brute_force_radius(points), rel=1e-6, abs=1e-6)
    assert_encloses(points, circle)


def test_mec_special_cases():
    assert minimum_enclosing_circle(np.array([[3.0, 4.0]])) == (3.0, 4.0, 0.0)
    cx, cy, r = minimum_enclosing_circle(np.array([[0.0, 0.0], [6.0, 8.0]]))
    assert (cx, cy, r) == pytest.approx((3.0, 4.0, 5.0))
    # Collinear points: the circle on the two extremes.
    line = np.column_stack([np.arange(10.0), 2 * np.arange(10.0)])
    assert minimum_enclosing_circle(line)[2] == pytest.approx(math.hypot(9, 18) / 2)
    # All points identical.
    assert minimum_enclosing_circle(np.ones((5, 2)))[2] == 0.0
    # Equilateral triangle: circumradius side / sqrt(3).
    triangle = np.array([[0.0, 0.0], [2.0, 0.0], [1.0, math.sqrt(3.0)]])
    assert minimum_enclosing_circle(triangle)[2] == pytest.approx(2 / math.sqrt(3))
    # Obtuse triangle: the longest side is the diameter.
    obtuse = np.array([[0.0, 0.0], [10.0, 0.0], [5.0, 1.0]])
    assert minimum_enclosing_circle(obtuse) == pytest.approx((5.0, 0.0, 5.0))


def test_mec_precise_far_from_origin():
    rng = np.random.default_rng(3)
    local = rng.normal(size=(200, 2)) * 500
    offset = np.array([1_450_000.0, 880_000.0])  # UTM-like magnitudes
    near = minimum_enclosing_circle(local)
    far = minimum_enclosing_circle(local + offset)
    assert far[2] == pytest.approx(near[2], rel=1e-9)
    assert far[0] - offset[0] == pytest.approx(near[0], abs=1e-6)


def test_mec_rejects_bad_input():
    with pytest.raises(ValueError):
        minimum_enclosing_circle(np.empty((0, 2)))
    with pytest.raises(ValueError):
        minimum_enclosing_circle(np.zeros((3, 3)))


@pytest.mark.parametrize("seed", range(10))
def test_cluster_circles_match_one_by_one(seed):
    rng = np.random.default_rng(seed)
    n = 2000
    centres = rng.uniform(0, 20_000, size=(15, 2))
    labels = rng.integers(0, 15, size=n)
    xy = centres[labels] + rng.normal(size=(n, 2)) * rng.uniform(50, 1500)
    xy = np.round(xy / 90) * 90 + 1_400_000  # a regular grid, far from the origin
    cx, cy, r = cluster_circles(xy, labels, 15)
    for label in range(15):
        expected = minimum_enclosing_circle(xy[labels == label])
        assert r[label] == pytest.approx(expected[2], rel=1e-9)
        assert_encloses(xy[labels == label], (cx[label], cy[label], r[label]))
    assert np.array_equal(cluster_radii(xy, labels, 15), r)


def test_cluster_circles_empty_and_single_member_labels():
    xy = np.array([[0.0, 0.0], [4.0, 0.0], [10.0, 10.0]])
    labels = np.array([0, 0, 2])
    cx, cy, r = cluster_circles(xy, labels, 4)
    assert r.tolist() == [2.0, 0.0, 0.0, 0.0]
    assert (cx[0], cy[0]) == (2.0, 0.0)
    assert np.isnan(cx[1]) and np.isnan(cy[1]) and np.isnan(cx[3])
    assert (cx[2], cy[2]) == (10.0, 10.0)


def test_cluster_circles_does_not_depend_on_order():
    rng = np.random.default_rng(11)
    xy = rng.normal(size=(500, 2)) * 1000
    labels = rng.integers(0, 7, size=500)
    order = rng.permutation(500)
    first = cluster_circles(xy, labels, 7)
    second = cluster_circles(xy[order], labels[order], 7)
    for a, b in zip(first, second):
        assert np.allclose(a, b, rtol=1e-12, atol=1e-6)


def test_cluster_circles_validation():
    xy = np.zeros((3, 2))
    with pytest.raises(ValueError):
        cluster_circles(xy, np.array([0, 1]), 2)
    with pytest.raises(ValueError):
        cluster_circles(xy, np.array([0, 1, 2]), 2)
    cx, cy, r = cluster_circles(np.empty((0, 2)), np.empty(0, dtype=int), 3)
    assert r.tolist() == [0.0, 0.0, 0.0] and np.isnan(cx).all()


@pytest.mark.parametrize("seed", range(8))
def test_many_clusters_match_brute_force(seed):
    # Many clusters at once (the vectorised solver), a few points each, some
    # collinear or duplicated: each radius equals the brute-force MEC.
    rng = np.random.default_rng(100 + seed)
    n_clusters = 40
    sizes = rng.integers(1, 12, size=n_clusters)
    labels = np.repeat(np.arange(n_clusters), sizes)
    xy = rng.normal(size=(labels.size, 2)) * rng.choice([1.0, 50.0, 3000.0])
    if seed % 2:
        xy = np.round(xy)  # ties and duplicates
    xy[labels == 0, 1] = 2 * xy[labels == 0, 0]  # one collinear cluster
    xy += 600_000.0
    cx, cy, r = cluster_circles(xy, labels, n_clusters)
    for label in range(n_clusters):
        members = xy[labels == label]
        assert r[label] == pytest.approx(
            brute_force_radius(members - 600_000.0), rel=1e-7, abs=1e-6
        )
        assert_encloses(members, (cx[label], cy[label], r[label]))


def test_points_on_a_circle_need_many_rounds():
    # Every point is on the hull and near the final circle: many rounds of
    # "add the farthest point", in a batch with an easy cluster.
    angle = np.linspace(0, 2 * np.pi, 400, endpoint=False) + 0.01
    ring = np.column_stack([np.cos(angle), np.sin(angle)]) * 1000
    blob = np.random.default_rng(2).normal(size=(300, 2)) * 10
    xy = np.vstack([ring + 5000] * 8 + [blob])
    labels = np.repeat(np.arange(9), [400] * 8 + [300])
    cx, cy, r = cluster_circles(xy, labels, 9)
    assert np.allclose(r[:8], 1000.0, rtol=1e-9)
    assert np.allclose(cx[:8], 5000.0, atol=1e-6)
    assert r[8] == pytest.approx(minimum_enclosing_circle(blob)[2], rel=1e-12)
