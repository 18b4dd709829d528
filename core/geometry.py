"""Minimum enclosing circles, for one point set and for every cluster at once.

A cluster's *radius* is the radius of the smallest circle that contains all
its members (the minimum enclosing circle, MEC). The tuned search computes it
for every cluster on every trial, so :func:`cluster_circles` works on all
clusters at once, with a fixed number of NumPy calls per round whatever the
number of clusters (no Python loop over clusters):

1. Points are sorted once by label; per cluster, the extreme points along a
   few fixed directions are the first *candidates* (a cheap inner
   approximation of the convex hull). Their exact MEC is found by brute
   force over every circle through two (as diameter) or three of them: the
   smallest one that encloses all candidates.
2. All points are checked against their cluster's circle in one vectorised
   pass. A cluster with a point outside gets its farthest point ``p`` added
   to its candidates. The MEC of the candidates plus ``p`` has ``p`` on its
   boundary (Welzl's lemma), so it is the smallest enclosing circle through
   ``p`` and one or two candidates: again a small brute force, done for all
   such clusters at once.
3. When no point is outside, the circle of the candidates encloses the whole
   cluster, and since no smaller circle can enclose a superset of the
   candidates, it *is* the cluster's MEC (exact, not an approximation).

The MEC of a set is the circle through two or three of its points, and every
enclosing circle is at least as large, so "the smallest enclosing candidate
circle" is exact. Ties between equal circles go to the first in a fixed
order, and no randomness is used: the algorithm is deterministic, and
results do not depend on the input order beyond floating-point rounding.

All coordinates must be in a metric CRS (metres); the radius is in the same
unit as the coordinates.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

# A point counts as inside when its squared distance exceeds the squared
# radius by at most this relative margin (floating-point slack).
_RELATIVE_TOLERANCE = 1e-9
# Three points this close to collinear (|det| relative to the squared side
# lengths) have no usable circumcircle; their MEC is a diameter circle, which
# is among the candidates anyway.
_COLLINEAR_TOLERANCE = 1e-12

# Unit vectors whose extreme points seed each cluster's candidates. The
# angles are deliberately "odd" so that points of a regular grid rarely tie;
# the first two are perpendicular (their four extremes are solved first).
_SEED_ANGLES = np.pi * (np.array([0.0, 0.5, 0.25, 0.75]) + 0.0371)
_SEED_DIRECTIONS = np.column_stack([np.cos(_SEED_ANGLES), np.sin(_SEED_ANGLES)])
# Clusters solved per block of the brute force: bounds the (clusters,
# circles, candidates) temporaries to a few MB.
_BLOCK_ELEMENTS = 1 << 19
# The seeds' MEC: brute force on this many, the rest added one by one.
_BRUTE_FORCE_COLUMNS = 4
# Up to this many clusters to solve at once, they are solved one by one.
_PYTHON_ROWS = 6


# ---------------------------------------------------------------------------
# Exact MEC of small candidate sets: one by one, or many at once
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
    *Computational Geometry*, MiniDisc). Plain Python floats: for a few
    clusters of a few candidates each, this beats NumPy's per-call overhead.
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


def _mec_rows(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact MEC of each row's points, one row at a time in plain Python."""
    circles = [_mec_small(xs, ys) for xs, ys in zip(x.tolist(), y.tolist())]
    cx, cy, r2 = (np.array(column, dtype=float) for column in zip(*circles))
    return cx, cy, r2


@lru_cache(maxsize=64)
def _circle_index(m: int, through_first: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Column triples (a, b, c) of the candidate circles of m points.

    Pairs (diameter circles) have ``c == -1``. ``through_first``: only the
    circles through column 0 (the point known to lie on the boundary).
    """
    a, b = np.triu_indices(m, 1)
    pairs = [(a, b, np.full(a.size, -1))]
    if m >= 3:
        i, j, k = (axis.ravel() for axis in np.indices((m, m, m)))
        keep = (i < j) & (j < k)
        pairs.append((i[keep], j[keep], k[keep]))
    a, b, c = (np.concatenate(parts) for parts in zip(*pairs))
    if through_first:
        keep = a == 0
        a, b, c = a[keep], b[keep], c[keep]
    return a.astype(np.intp), b.astype(np.intp), c.astype(np.intp)


def _smallest_enclosing(
    x: np.ndarray, y: np.ndarray, through_first: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact MEC of each row's points, as (cx, cy, r²) per row.

    ``x``, ``y``: (g, m) coordinates, rows padded with repeats of their own
    points (repeats change nothing). With ``through_first``, column 0 is known
    to lie on the MEC's boundary, so only circles through it are tried.
    """
    g, m = x.shape
    if m == 1:
        return x[:, 0].copy(), y[:, 0].copy(), np.zeros(g)
    a, b, c = _circle_index(m, through_first)
    is_pair = c < 0
    ax, ay, bx, by = x[:, a], y[:, a], x[:, b], y[:, b]
    # Diameter circles for pairs, circumcircles for triples (relative to a).
    cx = 0.5 * (ax + bx)
    cy = 0.5 * (ay + by)
    r2 = 0.25 * ((ax - bx) ** 2 + (ay - by) ** 2)
    triple = np.flatnonzero(~is_pair)
    if triple.size:
        tc = c[triple]
        ux, uy = bx[:, triple] - ax[:, triple], by[:, triple] - ay[:, triple]
        vx, vy = x[:, tc] - ax[:, triple], y[:, tc] - ay[:, triple]
        u2 = ux * ux + uy * uy
        v2 = vx * vx + vy * vy
        det = 2.0 * (ux * vy - uy * vx)
        scale = np.maximum(np.maximum(u2, v2), (ux - vx) ** 2 + (uy - vy) ** 2)
        usable = np.abs(det) > _COLLINEAR_TOLERANCE * scale
        det = np.where(usable, det, 1.0)
        ox = (vy * u2 - uy * v2) / det
        oy = (ux * v2 - vx * u2) / det
        cx[:, triple] = ax[:, triple] + ox
        cy[:, triple] = ay[:, triple] + oy
        r2[:, triple] = np.where(usable, ox * ox + oy * oy, np.inf)
    # A circle is valid when it encloses every point of its row.
    dx = x[:, None, :] - cx[:, :, None]
    dy = y[:, None, :] - cy[:, :, None]
    dx *= dx
    dy *= dy
    dx += dy
    encloses = (dx <= (r2 * (1.0 + _RELATIVE_TOLERANCE))[:, :, None]).all(axis=2)
    r2 = np.where(encloses, r2, np.inf)
    best = np.argmin(r2, axis=1)
    rows = np.arange(g)
    out_x, out_y, out_r2 = cx[rows, best], cy[rows, best], r2[rows, best]
    lost = ~np.isfinite(out_r2)
    if lost.any():
        # Never in practice (the MEC itself is a candidate); rounding could
        # only bite on degenerate input. Fall back to an enclosing circle.
        mx, my = x[lost].mean(axis=1), y[lost].mean(axis=1)
        out_x[lost], out_y[lost] = mx, my
        out_r2[lost] = ((x[lost] - mx[:, None]) ** 2 + (y[lost] - my[:, None]) ** 2).max(axis=1)
    return out_x, out_y, out_r2


def _seed_circles(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact MEC of each row's points: brute force on the first few columns,
    then the others added one at a time (only where outside, through it).

    Cheaper than a brute force on all columns: its cost grows as m**4.
    """
    m = x.shape[1]
    if x.shape[0] <= _PYTHON_ROWS:
        return _mec_rows(x, y)
    first = min(m, _BRUTE_FORCE_COLUMNS)
    cx, cy, r2 = _solve_blocks(x[:, :first], y[:, :first], False)
    for column in range(first, m):
        outside = (x[:, column] - cx) ** 2 + (y[:, column] - cy) ** 2 > r2 * (
            1.0 + _RELATIVE_TOLERANCE
        )
        rows = np.flatnonzero(outside)
        if rows.size:
            # The new point first (on the boundary), then the columns before it.
            order = np.r_[column, 0:column]
            cx[rows], cy[rows], r2[rows] = _solve_blocks(
                x[np.ix_(rows, order)], y[np.ix_(rows, order)], True
            )
    return cx, cy, r2


def _solve_blocks(
    x: np.ndarray, y: np.ndarray, through_first: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`_smallest_enclosing` in blocks of rows (bounded temporaries).

    Few rows are solved one by one in Python (:func:`_mec_small`), which
    costs less than the fixed NumPy overhead of a vectorised solve.
    """
    g, m = x.shape
    if g <= _PYTHON_ROWS:
        return _mec_rows(x, y)
    n_circles = len(_circle_index(m, through_first)[0]) if m > 1 else 1
    block = max(1, _BLOCK_ELEMENTS // max(1, n_circles * m))
    if g <= block:
        return _smallest_enclosing(x, y, through_first)
    parts = [
        _smallest_enclosing(x[start : start + block], y[start : start + block], through_first)
        for start in range(0, g, block)
    ]
    return tuple(np.concatenate(part) for part in zip(*parts))  # type: ignore[return-value]


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
    cx, cy, r = cluster_circles(pts, np.zeros(pts.shape[0], dtype=np.intp), 1)
    return float(cx[0]), float(cy[0]), float(r[0])


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
    counts = np.bincount(labels, minlength=n_clusters)
    present = np.flatnonzero(counts)
    n_groups = present.size
    starts = np.concatenate(([0], np.cumsum(counts[present])[:-1]))
    # Each cluster is shifted to its first point: full precision for circumcentres.
    origin = xy[order[starts]]
    group = np.repeat(np.arange(n_groups), counts[present])
    # One contiguous array per coordinate: faster than (n, 2) rows.
    lx = xy[:, 0][order]
    lx -= origin[group, 0]
    ly = xy[:, 1][order]
    ly -= origin[group, 1]

    # Seed candidates: per cluster, the first point that is extreme along
    # each fixed direction, either way (one direction at a time: no
    # (n, directions) temporaries, no BLAS product).
    position = np.arange(lx.size)
    seeds = []
    for cos, sin in _SEED_DIRECTIONS.tolist():
        projection = lx * cos
        projection += ly * sin
        for reduce in (np.maximum, np.minimum):
            extreme = reduce.reduceat(projection, starts)[group]
            first = np.where(projection == extreme, position, lx.size)
            seeds.append(np.minimum.reduceat(first, starts))
    candidates = np.column_stack(seeds)  # (groups, 8), point positions
    circle_x, circle_y, circle_r2 = _seed_circles(lx[candidates], ly[candidates])
    n_candidates = np.full(n_groups, candidates.shape[1])

    # Points still to check: only those of clusters whose circle just changed
    # (a cluster whose circle encloses all its points is final).
    active = position
    while True:
        # Vectorised check of the active points against their cluster's circle.
        active_group = group[active]
        excess = (lx[active] - circle_x[active_group]) ** 2
        excess += (ly[active] - circle_y[active_group]) ** 2
        excess -= circle_r2[active_group] * (1.0 + _RELATIVE_TOLERANCE)
        # Active points stay sorted by group: reduce per run of one group.
        boundary = np.empty(active.size, dtype=bool)
        boundary[0] = True
        np.not_equal(active_group[1:], active_group[:-1], out=boundary[1:])
        run_starts = np.flatnonzero(boundary)
        worst = np.maximum.reduceat(excess, run_starts)
        outside = worst > 0.0
        if not outside.any():
            break
        # The farthest point outside, per cluster with one (the first on ties).
        run_of_point = np.cumsum(boundary) - 1
        is_worst = (excess == worst[run_of_point]) & (excess > 0.0)
        first = np.where(is_worst, active, lx.size)
        run_group = active_group[run_starts]
        farthest = np.minimum.reduceat(first, run_starts)[outside]
        solve = run_group[outside]
        # A candidate is inside its own circle up to rounding; never loop on it.
        known = (candidates[solve] == farthest[:, None]).any(axis=1)
        solve, farthest = solve[~known], farthest[~known]
        if solve.size == 0:
            break
        width = int(n_candidates[solve].max())
        # Column 0: the new point (on the boundary); then the candidates.
        block = np.column_stack([farthest, candidates[solve, :width]])
        circle_x[solve], circle_y[solve], circle_r2[solve] = _solve_blocks(
            lx[block], ly[block], True
        )
        # Append the new point to the candidates, padding with repeats.
        if width == candidates.shape[1]:
            candidates = np.column_stack([candidates, candidates[:, 0]])
        candidates[solve, n_candidates[solve]] = farthest
        n_candidates[solve] += 1
        changed = np.zeros(n_groups, dtype=bool)
        changed[solve] = True
        active = active[changed[active_group]]

    centre_x[present] = circle_x + origin[:, 0]
    centre_y[present] = circle_y + origin[:, 1]
    radius[present] = np.sqrt(circle_r2)
    return centre_x, centre_y, radius


def cluster_radii(xy: np.ndarray, labels: np.ndarray, n_clusters: int) -> np.ndarray:
    """Minimum-enclosing-circle radius per cluster code (0 for an empty code).

    See :func:`cluster_circles` for the parameters.
    """
    return cluster_circles(xy, labels, n_clusters)[2]
