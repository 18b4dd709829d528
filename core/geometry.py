"""Minimum enclosing circles, for one point set and for every cluster at once.

A cluster's *radius* is the radius of the smallest circle that contains all
its members (the minimum enclosing circle, MEC). The tuned search computes it
for every cluster on every trial, so :func:`cluster_circles` is vectorised:

1. Points are sorted once by label; per cluster, the extreme points along a
   few fixed directions are candidates (a cheap inner approximation of the
   convex hull).
2. The exact MEC of each cluster's candidates is computed with the
   incremental (Welzl / move-to-front) algorithm.
3. All points are checked against their cluster's circle in one vectorised
   pass; a cluster with a point outside gets its farthest point added to its
   candidates and is solved again. When no point is outside, the circle of
   the candidates encloses the whole cluster, and since no smaller circle can
   enclose a superset of the candidates, it *is* the cluster's MEC (exact, not
   an approximation).

Results do not depend on the input order beyond floating-point rounding, and
no randomness is used: the algorithm is deterministic.

All coordinates must be in a metric CRS (metres); the radius is in the same
unit as the coordinates.
"""

from __future__ import annotations

import math

import numpy as np

# A point counts as inside when its squared distance exceeds the squared
# radius by at most this relative margin (floating-point slack).
_RELATIVE_TOLERANCE = 1e-9

_N_SEED_DIRECTIONS = 4
# Unit vectors whose extreme points seed each cluster's candidates. The
# angles are deliberately "odd" so that points of a regular grid rarely tie.
_SEED_ANGLES = np.pi * (np.arange(_N_SEED_DIRECTIONS) / _N_SEED_DIRECTIONS + 0.0371)
_SEED_DIRECTIONS = np.column_stack([np.cos(_SEED_ANGLES), np.sin(_SEED_ANGLES)])


# ---------------------------------------------------------------------------
# Exact MEC of one small point set (coordinates already shifted near 0)
# ---------------------------------------------------------------------------


def _circle_two(ax: float, ay: float, bx: float, by: float) -> tuple[float, float, float]:
    """Circle with segment ab as diameter, as (cx, cy, r²)."""
    cx = (ax + bx) / 2.0
    cy = (ay + by) / 2.0
    return cx, cy, (ax - cx) ** 2 + (ay - cy) ** 2


def _circle_three(
    ax: float, ay: float, bx: float, by: float, px: float, py: float
) -> tuple[float, float, float]:
    """Circumcircle of a, b, p as (cx, cy, r²); the widest diameter circle if collinear."""
    bx_, by_ = bx - ax, by - ay
    px_, py_ = px - ax, py - ay
    det = 2.0 * (bx_ * py_ - by_ * px_)
    b2 = bx_ * bx_ + by_ * by_
    p2 = px_ * px_ + py_ * py_
    scale = max(b2, p2, (bx - px) ** 2 + (by - py) ** 2)
    if abs(det) <= 1e-12 * scale:
        # Collinear (or duplicate) points: the circle on the two farthest apart.
        pairs = [
            (b2, (ax, ay, bx, by)),
            (p2, (ax, ay, px, py)),
            ((bx - px) ** 2 + (by - py) ** 2, (bx, by, px, py)),
        ]
        _, ends = max(pairs, key=lambda pair: pair[0])
        return _circle_two(*ends)
    ux = (py_ * b2 - by_ * p2) / det
    uy = (bx_ * p2 - px_ * b2) / det
    return ax + ux, ay + uy, ux * ux + uy * uy


def _mec_small(xs: list[float], ys: list[float]) -> tuple[float, float, float]:
    """Exact MEC of a small point set as (cx, cy, r²), incremental algorithm.

    Classic three-level incremental construction (as in de Berg et al.,
    *Computational Geometry*, MiniDisc). Plain Python floats: for the few
    dozen candidate points per cluster this beats NumPy's per-call overhead.
    """
    m = len(xs)
    if m == 1:
        return xs[0], ys[0], 0.0
    slack = 1.0 + _RELATIVE_TOLERANCE
    cx, cy, r2 = _circle_two(xs[0], ys[0], xs[1], ys[1])
    for i in range(2, m):
        px, py = xs[i], ys[i]
        if (px - cx) ** 2 + (py - cy) ** 2 <= r2 * slack:
            continue
        # p_i lies on the boundary of the MEC of points 0..i.
        cx, cy, r2 = _circle_two(xs[0], ys[0], px, py)
        for j in range(1, i):
            qx, qy = xs[j], ys[j]
            if (qx - cx) ** 2 + (qy - cy) ** 2 <= r2 * slack:
                continue
            # p_i and p_j lie on the boundary of the MEC of points 0..j plus p_i.
            cx, cy, r2 = _circle_two(px, py, qx, qy)
            for k in range(j):
                sx, sy = xs[k], ys[k]
                if (sx - cx) ** 2 + (sy - cy) ** 2 > r2 * slack:
                    cx, cy, r2 = _circle_three(px, py, qx, qy, sx, sy)
    return cx, cy, r2


def _hull_vertices(points: np.ndarray) -> np.ndarray:
    """Convex hull vertices of ``points``; all points when the hull is degenerate."""
    if points.shape[0] <= 3:
        return points
    try:
        from scipy.spatial import ConvexHull, QhullError
    except ImportError:  # scipy < 1.8 keeps QhullError elsewhere
        from scipy.spatial import ConvexHull
        from scipy.spatial.qhull import QhullError  # type: ignore[no-redef]
    try:
        return points[ConvexHull(points).vertices]
    except (QhullError, ValueError):
        # Collinear or duplicate points: the MEC is the circle on the two
        # extreme points along the line, found among all points directly.
        return points


# ---------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------


def minimum_enclosing_circle(points: np.ndarray) -> tuple[float, float, float]:
    """Exact minimum enclosing circle of a 2-D point set.

    Parameters
    ----------
    points : ndarray of shape (n, 2)
        Coordinates in a metric CRS. ``n >= 1``; duplicates and collinear
        points are fine.

    Returns
    -------
    (cx, cy, r) : tuple of float
        Centre and radius, in the unit of ``points``. One point gives radius 0.

    Raises
    ------
    ValueError
        If ``points`` is empty or not of shape (n, 2).
    """
    pts = np.asarray(points, dtype=float)
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise ValueError(f"points must have shape (n, 2), got {pts.shape}.")
    if pts.shape[0] == 0:
        raise ValueError("points is empty; the minimum enclosing circle needs at least one point.")
    hull = _hull_vertices(pts)
    # Shift to a local origin so circumcentres keep full precision.
    origin = hull.mean(axis=0)
    local = hull - origin
    cx, cy, r2 = _mec_small(local[:, 0].tolist(), local[:, 1].tolist())
    return cx + float(origin[0]), cy + float(origin[1]), math.sqrt(r2)


def cluster_circles(
    xy: np.ndarray, labels: np.ndarray, n_clusters: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact minimum enclosing circle of every cluster.

    Parameters
    ----------
    xy : ndarray of shape (n, 2)
        Coordinates in a metric CRS.
    labels : ndarray of shape (n,)
        Integer cluster codes in ``0 .. n_clusters - 1``.
    n_clusters : int
        Number of clusters (labels without members are allowed).

    Returns
    -------
    centre_x, centre_y, radius : ndarray of shape (n_clusters,)
        Circle per label code. A label with no members has radius 0 and NaN
        centre; a label with one member (or only duplicate points) has
        radius 0 and that point as centre.
    """
    xy = np.asarray(xy, dtype=float)
    labels = np.asarray(labels)
    if xy.ndim != 2 or xy.shape[1] != 2:
        raise ValueError(f"xy must have shape (n, 2), got {xy.shape}.")
    if labels.shape != (xy.shape[0],):
        raise ValueError(f"labels must have shape ({xy.shape[0]},), got {labels.shape}.")
    centre_x = np.full(n_clusters, np.nan)
    centre_y = np.full(n_clusters, np.nan)
    radius = np.zeros(n_clusters)
    if xy.shape[0] == 0 or n_clusters == 0:
        return centre_x, centre_y, radius
    labels = labels.astype(np.intp, copy=False)
    if labels.min() < 0 or labels.max() >= n_clusters:
        raise ValueError(f"labels must lie in 0..{n_clusters - 1}.")

    # A stable sort of small integers is a radix sort in NumPy: O(n).
    small = np.int16 if n_clusters <= np.iinfo(np.int16).max else np.intp
    order = np.argsort(labels.astype(small), kind="stable")
    sorted_labels = labels[order]
    counts = np.bincount(sorted_labels, minlength=n_clusters)
    present = np.flatnonzero(counts)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))[present]
    # Each cluster is shifted to its first point: full precision for circumcentres.
    origin = xy[order[starts]]
    group = np.repeat(np.arange(present.size), counts[present])
    # One contiguous array per coordinate: faster than (n, 2) rows.
    lx = xy[:, 0][order]
    lx -= origin[group, 0]
    ly = xy[:, 1][order]
    ly -= origin[group, 1]

    # Seed candidates: extreme points per cluster along fixed directions, one
    # direction at a time (no (n, directions) temporaries, no BLAS product).
    is_extreme = np.zeros(lx.size, dtype=bool)
    for cos, sin in _SEED_DIRECTIONS.tolist():
        projection = lx * cos
        projection += ly * sin
        is_extreme |= projection == np.maximum.reduceat(projection, starts)[group]
        is_extreme |= projection == np.minimum.reduceat(projection, starts)[group]
    seed_index = np.flatnonzero(is_extreme)
    seed_group = group[seed_index]
    bounds = np.searchsorted(seed_group, np.arange(present.size + 1))
    candidates = [seed_index[bounds[g] : bounds[g + 1]].tolist() for g in range(present.size)]

    circle_x = np.zeros(present.size)
    circle_y = np.zeros(present.size)
    circle_r2 = np.zeros(present.size)
    to_solve = range(present.size)
    # Points still to check: only those of clusters whose circle just changed
    # (a cluster whose circle encloses all its points is final).
    active = np.arange(lx.size)
    while True:
        for g in to_solve:
            idx = candidates[g]
            circle_x[g], circle_y[g], circle_r2[g] = _mec_small(lx[idx].tolist(), ly[idx].tolist())
        # Vectorised check of the active points against their cluster's circle.
        active_group = group[active]
        excess = (lx[active] - circle_x[active_group]) ** 2
        excess += (ly[active] - circle_y[active_group]) ** 2
        excess -= circle_r2[active_group] * (1.0 + _RELATIVE_TOLERANCE)
        # Active points stay sorted by group: reduce per run of one group.
        run_starts = np.flatnonzero(np.r_[True, active_group[1:] != active_group[:-1]])
        worst = np.full(present.size, -np.inf)
        worst[active_group[run_starts]] = np.maximum.reduceat(excess, run_starts)
        if not np.any(worst > 0.0):
            break
        is_worst = (excess == worst[active_group]) & (excess > 0.0)
        worst_index = active[is_worst]
        worst_group, first = np.unique(group[worst_index], return_index=True)
        to_solve = []
        for g, point in zip(worst_group.tolist(), worst_index[first].tolist()):
            # A candidate is inside its own circle up to rounding; never loop on it.
            if point not in candidates[g]:
                candidates[g].append(point)
                to_solve.append(g)
        if not to_solve:
            break
        active = active[np.isin(active_group, to_solve)]

    centre_x[present] = circle_x + origin[:, 0]
    centre_y[present] = circle_y + origin[:, 1]
    radius[present] = np.sqrt(circle_r2)
    return centre_x, centre_y, radius


def cluster_radii(xy: np.ndarray, labels: np.ndarray, n_clusters: int) -> np.ndarray:
    """Minimum-enclosing-circle radius per cluster code (0 for an empty code).

    See :func:`cluster_circles` for the parameters.
    """
    return cluster_circles(xy, labels, n_clusters)[2]
