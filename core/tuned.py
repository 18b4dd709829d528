"""Tuned weighted k-means: the clustering engine (no QGIS).

:class:`TunedClustering` groups weighted units (grid cells, points, buildings)
into clusters close to a desired weight and radius, as IDinsight's
clustering-aws does:

1. **Pass 1.** For each k in a search space around
   ``k0 = total_weight / desired_weight`` (see :mod:`.search`), run weighted
   k-means and score the clustering (median weight and median
   minimum-enclosing-circle radius against the targets). Keep the best.
2. **Extra passes** (``max_passes > 1``). Every cluster heavier than
   ``max_cluster_weight`` is clustered again on its own, the same way, with
   ``subsequent_max_trials`` trials; its children get the parent's id plus a
   suffix (``CLUSTER_001`` -> ``CLUSTER_001_01``) and the pass number. Stop
   when no cluster is oversized, when the number of oversized clusters has
   been the same for 3 consecutive passes, or after ``max_passes`` passes.
3. **Refinement** (on by default: ``contiguity=True``, or whenever
   ``min_cluster_weight`` or ``max_cluster_radius`` is set). The tuned
   clusters are repaired into guaranteed PSUs by
   :func:`~.refine.refine_partition` on the units' adjacency graph: every
   cluster connected, its weight in ``[min_cluster_weight,
   max_cluster_weight]``, its radius at most ``max_cluster_radius`` (each
   where given); clusters that cannot meet them say why in ``status``.

Cluster IDs and passes
----------------------
Pass 1 numbers clusters ``CLUSTER_001``, ``CLUSTER_002``...; an extra pass
gives the children of a split cluster its id plus ``_01``, ``_02``... and the
pass number. The refinement counts as one more pass, the *refinement pass*
(the number of the last tuned pass + 1):

* a cluster the refinement keeps unchanged keeps its id and pass;
* a changed cluster takes the id of its *parent* (the tuned cluster that
  gives it most of its weight) when it is the parent's only cluster, else the
  parent's id plus ``_01``, ``_02``... (numbered in unit order); either way its
  pass is the refinement pass.

IDs stay unique, hierarchical and deterministic.

How k-means is run
------------------
*Compression.* K-means runs on a compressed copy of the units: units are
binned into square cells of ``desired_cluster_radius / 3`` (halved until
there are at least 30 cells per cluster), and each cell is replaced by its
total weight at its weighted centroid. For a fixed assignment of cells, the
weighted k-means objective of the cells differs from that of the units only
by the constant within-cell scatter, so the centres are those of k-means on
the units up to the resolution of the cells. On the 69k-unit benchmark this
gives 5.5k cells and makes a fit about ten times cheaper, for a k-means
objective within 1 % of the uncompressed one. Data that does not compress
(fewer than ~1.7 units per cell) is clustered unit by unit.

*Seeding and iterations.* Centres are seeded with weighted greedy k-means++
(our own implementation, seeded from ``random_state`` and the parent id).
k-means++ picks centres one at a time, so one sequence of ``k_max`` centres
is computed per search and the trial for k starts from its first k centres.
They are refined with weighted Lloyd iterations (one start, like
scikit-learn's ``KMeans(n_init=1)`` with that initialisation), our own NumPy
loop: nearest centres by brute force on small problems and with a KD-tree of
the centres on large ones (with ~100+ clusters a KD-tree query beats
scikit-learn's dense distance loop, and many-cluster problems do not slow to
a crawl). Being our own, results do not change with the scikit-learn version.

*Assignment.* Every unit belongs to its nearest final centre (a Voronoi
partition of the units, what ``KMeans.predict`` would return). Units of a
cell far from any boundary between centres take the cell's centre without
measuring (exact, by the triangle inequality).

Determinism
-----------
Each k's clustering is a pure function of the data, k and a seed derived from
``random_state`` and the cluster's id, so the result is the same whatever
``n_jobs`` and whatever order the work is done in. Parallel work uses threads
only (never processes). The refinement is deterministic too.
"""

from __future__ import annotations

import math
import os
import threading
import time
import warnings
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from numbers import Integral, Real
from typing import Any

import numpy as np
import pandas as pd
from scipy import sparse
from scipy.spatial import cKDTree

from .adjacency import bridge_light_pieces, build_adjacency
from .errors import ClusteringCancelled, ClusteringInputError
from .geometry import cluster_circles, cluster_radii
from .refine import cluster_connectivity, cluster_status, refine_partition, summarize_partition
from .search import (
    clustering_score,
    expected_n_clusters,
    expected_trials,
    search_k,
    search_space,
)

#: Side of the compression cells, as a fraction of the desired radius.
_CELL_FRACTION = 1.0 / 3.0
#: Compression is refined until there are this many cells per cluster (largest k).
_MIN_CELLS_PER_CLUSTER = 30
#: Compression is skipped when it would keep more than this share of the units.
_MAX_CELL_SHARE = 0.6
#: Up to this many (points x centres), nearest centres are found by brute
#: force; above, with a KD-tree of the centres.
_DENSE_ASSIGNMENT_LIMIT = 100_000
#: Up to this many points, k-means++ measures every point for each candidate
#: (a few large NumPy operations beat a KD-tree's lists of neighbours).
_DENSE_SEEDING_LIMIT = 50_000
#: Up to this many (points x centres), Lloyd iterations measure every distance.
_DENSE_LLOYD_LIMIT = 20_000
#: Nearest centres (itself included) of each centre among which the points
#: near it are measured first (see _CentreNeighbours).
_NEIGHBOUR_CENTRES = 10
#: Share of the progress bar for the tuned passes when a refinement follows.
_TUNED_SHARE_WITH_REFINEMENT = 0.55
#: Long loops call the cancellation checkpoint at least this often (seconds).
_CHECK_INTERVAL = 0.1
#: Lloyd iteration cap and relative tolerance on the centre shift (as in
#: scikit-learn: the total squared shift must stay below this times the mean
#: coordinate variance).
_MAX_ITER = 100
_TOL = 1e-3

CLUSTER_PREFIX = "CLUSTER_"
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


# ---------------------------------------------------------------------------
# Result
# ---------------------------------------------------------------------------


@dataclass
class ClusteringResult:
    """The outcome of :meth:`TunedClustering.fit`.

    Attributes
    ----------
    labels : ndarray of shape (n,), int
        Row of :attr:`clusters` each unit belongs to.
    cluster_ids : ndarray of shape (n,), object
        Hierarchical id of each unit's cluster (``CLUSTER_001``, ``CLUSTER_001_01``).
    cluster_pass : ndarray of shape (n,), int
        Pass that formed each unit's cluster (1 = first pass).
    clusters : pandas.DataFrame
        One row per cluster, sorted by ``cluster_id``, columns ``cluster_id,
        weight, radius_m, n_units, pass, centre_x, centre_y, status`` (centre
        and radius of the minimum enclosing circle, in the input's metric
        coordinates; ``status`` is ``ok`` or why the cluster misses a
        constraint, see :mod:`.refine`).
    trials : pandas.DataFrame
        One row per evaluated k: ``pass, parent_id, trial, k, score,
        median_weight, median_radius_m`` (``parent_id`` is None in pass 1).
    best_k : int
        The k chosen in pass 1.
    params : dict
        The estimator's parameters.
    quality : dict
        How well the clusters meet the constraints, as shares of clusters
        (in [0, 1]): ``share_in_range`` (weight within ``[min_cluster_weight,
        max_cluster_weight]``, each bound where given), ``share_contiguous``
        (connected in the adjacency graph; None when no graph was given or
        built), ``share_within_radius`` (radius at most
        ``max_cluster_radius``; 1.0 without a cap), ``share_ok`` (status
        ``ok``); ``status_counts`` (clusters per status); ``adjacency`` (how
        the neighbour graph was made, or None) and, for a distance graph
        built here, ``neighbour_distance`` (its longest edge, metres);
        ``bridges`` (links added across gaps, with ``bridge_distance``).
        Present also without refinement (computed from the tuned clusters).
    """

    labels: np.ndarray
    cluster_ids: np.ndarray
    cluster_pass: np.ndarray
    clusters: pd.DataFrame
    trials: pd.DataFrame
    best_k: int
    params: dict[str, Any] = field(default_factory=dict)
    quality: dict[str, Any] = field(default_factory=dict)

    @property
    def n_clusters(self) -> int:
        """Number of clusters."""
        return len(self.clusters)

    def optuna_study(self, pass_number: int = 1, parent_id: str | None = None) -> Any:
        """The tuning trials of one search as an Optuna study (needs the optional optuna).

        Parameters
        ----------
        pass_number : int, default 1
            The pass whose search to return.
        parent_id : str, optional
            In passes after the first, the cluster that was re-clustered
            (each has its own search); required there when the pass has
            several.

        Returns
        -------
        optuna.Study
            One finished trial per evaluated k (parameter ``k``, the score as
            its value), in evaluation order; ``study.best_params["k"]`` is
            the chosen k.

        Raises
        ------
        ImportError
            Optuna is not installed (the message says how to install it).
        """
        from .search import optuna_study

        rows = self.trials[self.trials["pass"] == pass_number]
        if parent_id is not None:
            rows = rows[rows["parent_id"] == parent_id]
        parents = rows["parent_id"].dropna().unique()
        if rows.empty or len(parents) > 1:
            known = sorted(self.trials["pass"].unique().tolist())
            raise ClusteringInputError(
                f"No single search for pass {pass_number}"
                + (f" and parent {parent_id!r}" if parent_id is not None else "")
                + f" (passes with trials: {known}; {len(parents)} parents in this pass). "
                "Give the pass number and, after pass 1, the parent cluster's id."
            )
        return optuna_study(zip(rows["k"].tolist(), rows["score"].tolist()))


# ---------------------------------------------------------------------------
# Units to cluster, compressed for k-means
# ---------------------------------------------------------------------------


class _Units:
    """Coordinates and weights of the units of one clustering problem.

    Coordinates are shifted to their mean (precision of squared distances).
    ``cell_xy``/``cell_weight`` is the compressed copy that k-means runs on,
    ``unit_cell`` maps each unit to its cell, and ``cell_reach`` is the largest
    distance from a cell's centroid to one of its units (used to assign units
    to centres without computing every unit's distances).
    """

    def __init__(
        self, xy: np.ndarray, weights: np.ndarray, cell_size: float, k_max: int, seed: Sequence[int]
    ):
        self.xy = xy - xy.mean(axis=0)
        self.weights = weights
        self.n = xy.shape[0]
        spread = float(self.xy.var(axis=0).mean())
        self.tolerance = _TOL * spread
        self.k_max = k_max
        self._seed = list(seed)
        self._seeding: np.ndarray | None = None
        self._seeding_lock = threading.Lock()
        self._compress(cell_size, k_max)

    def initial_centres(self, k: int, checkpoint: Callable[[], None]) -> np.ndarray:
        """The first k centres of one seeded k-means++ sequence of ``k_max`` centres.

        k-means++ picks centres one after another, each depending only on the
        previous ones, so the first k centres of a longer run *are* a k-means++
        seeding for k. Computing the sequence once serves every trial.
        ``checkpoint`` is called while it is computed (cancellation).
        """
        with self._seeding_lock:
            if self._seeding is None:
                rng = np.random.default_rng(self._seed)
                self._seeding = _kmeans_plusplus(
                    self.cell_xy, self.cell_weight, self.k_max, rng, checkpoint
                )
        return self._seeding[:k].copy()

    def _compress(self, cell_size: float, k_max: int) -> None:
        self.compressed = False
        self.cell_xy, self.cell_weight = self.xy, self.weights
        self.unit_cell = None
        self.cell_reach = None
        if self.n < 2 * _MIN_CELLS_PER_CLUSTER or not cell_size > 0:
            return
        low = self.xy.min(axis=0)
        extent = self.xy.max(axis=0) - low
        for _ in range(8):
            if np.any(extent / cell_size > 2**30):
                return
            ij = np.floor((self.xy - low) / cell_size).astype(np.int64)
            key = ij[:, 0] * (int(ij[:, 1].max()) + 1) + ij[:, 1]
            _, unit_cell = np.unique(key, return_inverse=True)
            n_cells = int(unit_cell.max()) + 1
            if n_cells > _MAX_CELL_SHARE * self.n:
                return
            if n_cells >= _MIN_CELLS_PER_CLUSTER * k_max:
                break
            cell_size /= 2.0
        else:
            return
        unit_cell = unit_cell.reshape(-1)
        weight = np.bincount(unit_cell, self.weights, minlength=n_cells)
        count = np.bincount(unit_cell, minlength=n_cells)
        # Weighted centroid; cells without weight use the plain mean.
        has_weight = weight > 0
        unit_factor = np.where(has_weight[unit_cell], self.weights, 1.0)
        norm = np.where(has_weight, weight, count)
        cx = np.bincount(unit_cell, unit_factor * self.xy[:, 0], minlength=n_cells) / norm
        cy = np.bincount(unit_cell, unit_factor * self.xy[:, 1], minlength=n_cells) / norm
        distance = np.hypot(self.xy[:, 0] - cx[unit_cell], self.xy[:, 1] - cy[unit_cell])
        by_cell = np.argsort(unit_cell, kind="stable")
        starts = np.searchsorted(unit_cell[by_cell], np.arange(n_cells))
        reach = np.maximum.reduceat(distance[by_cell], starts)
        self.compressed = True
        self.cell_xy = np.column_stack([cx, cy])
        self.cell_weight = weight
        self.unit_cell = unit_cell
        self.cell_reach = reach


# ---------------------------------------------------------------------------
# Weighted k-means
# ---------------------------------------------------------------------------


def _squared_distances(points: np.ndarray, centres: np.ndarray) -> np.ndarray:
    dx = np.subtract.outer(points[:, 0], centres[:, 0])
    dy = np.subtract.outer(points[:, 1], centres[:, 1])
    dx *= dx
    dy *= dy
    dx += dy
    return dx


def _kmeans_plusplus(
    points: np.ndarray,
    weights: np.ndarray,
    k: int,
    rng: np.random.Generator,
    checkpoint: Callable[[], None] | None = None,
) -> np.ndarray:
    """Weighted greedy k-means++ seeding; fewer than k centres if weight runs out.

    (No ``@`` products here or in the Lloyd loop: BLAS would start its own
    threads, which spin and compete with ours on a small machine.)

    Each new centre is the best (lowest potential) of ``2 + log k`` candidates
    drawn with probability proportional to weight times squared distance to
    the nearest centre so far. Only points closer to a candidate than the
    largest current nearest-centre distance can get closer, so on larger sets
    those are found with a KD-tree instead of measuring every point.
    """
    n = points.shape[0]
    n_local_trials = 2 + int(math.log(k))
    cumulative = np.cumsum(weights)
    first = min(int(np.searchsorted(cumulative, rng.random() * cumulative[-1], "right")), n - 1)
    chosen = [first]
    closest = _squared_distances(points, points[[first]])[:, 0]
    potential = float((weights * closest).sum())
    tree = cKDTree(points) if n > _DENSE_SEEDING_LIMIT else None
    last_check = time.monotonic()
    for _ in range(1, k):
        if checkpoint is not None and time.monotonic() - last_check > _CHECK_INTERVAL:
            checkpoint()  # ~1000 centres take seconds: stay cancellable
            last_check = time.monotonic()
        if not potential > 0.0:
            break  # every unit with weight already sits on a centre
        cumulative = np.cumsum(weights * closest)
        draws = rng.random(n_local_trials) * cumulative[-1]
        candidates = np.minimum(np.searchsorted(cumulative, draws, "right"), n - 1)
        if tree is None:
            # (candidates, points), row by row contiguous: the same numbers
            # as measuring points against candidates, without a transpose.
            candidate_closest = _squared_distances(points[candidates], points)
            np.minimum(candidate_closest, closest, out=candidate_closest)
            candidate_potential = (candidate_closest * weights).sum(axis=1)
            best = int(np.argmin(candidate_potential))
            closest = candidate_closest[best]
            potential = float(candidate_potential[best])
        else:
            reach = math.sqrt(float(closest.max()))
            neighbourhoods = tree.query_ball_point(points[candidates], reach)
            best, best_gain, best_update = 0, -1.0, (np.empty(0, np.intp), np.empty(0))
            for index, (candidate, near) in enumerate(zip(candidates, neighbourhoods)):
                near = np.asarray(near, dtype=np.intp)
                distance = _squared_distances(points[near], points[[candidate]])[:, 0]
                improved = np.minimum(closest[near], distance)
                gain = float((weights[near] * (closest[near] - improved)).sum())
                if gain > best_gain:
                    best, best_gain, best_update = index, gain, (near, improved)
            closest[best_update[0]] = best_update[1]
            potential -= best_gain
        chosen.append(int(candidates[best]))
    return points[chosen].copy()


class _CentreNeighbours:
    """Each centre's nearest centres: exact nearest-centre searches from a good guess.

    A point whose nearest centre is probably ``c`` (its previous centre) is
    measured against ``table[c]`` only: ``c`` itself and its
    ``_NEIGHBOUR_CENTRES - 1`` nearest other centres. Every other centre is at
    least ``reach[c]`` from ``c``, so (triangle inequality) at least
    ``reach[c] - d(point, c)`` from the point: when the best of the table is
    no farther, it is the nearest centre, exactly. The few points where that
    cannot be shown are measured against every centre. This is a handful of
    dense (points x 10) NumPy operations instead of a KD-tree per call.
    ``separation[c]`` is half the distance from ``c`` to its nearest other
    centre (Hamerly's bound).
    """

    def __init__(self, centres: np.ndarray):
        k = centres.shape[0]
        self.centres = centres
        self.x = np.ascontiguousarray(centres[:, 0])
        self.y = np.ascontiguousarray(centres[:, 1])
        squared = _squared_distances(centres, centres)
        np.fill_diagonal(squared, np.inf)
        n_others = min(_NEIGHBOUR_CENTRES - 1, k - 1)
        if n_others < k - 1:
            order = np.argpartition(squared, n_others, axis=1)
            others = order[:, :n_others]
            self.reach = np.sqrt(squared[np.arange(k), order[:, n_others]])
        else:
            others = np.flatnonzero(~np.eye(k, dtype=bool)).reshape(k, k - 1) % k
            self.reach = np.full(k, np.inf)
        self.table = np.column_stack([np.arange(k), others])
        self.separation = 0.5 * np.sqrt(squared.min(axis=1))

    def nearest(
        self, points: np.ndarray, guess: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Distance to the nearest centre, a lower bound on the distance to any
        other centre, and the nearest centre's index, for each point.

        ``guess``: each point's likely nearest centre (ties keep it).
        """
        candidates = self.table[guess]
        dx = points[:, :1] - self.x[candidates]
        dy = points[:, 1:2] - self.y[candidates]
        dx *= dx
        dy *= dy
        dx += dy
        rows = np.arange(points.shape[0])
        own = np.sqrt(dx[:, 0])
        best = np.argmin(dx, axis=1)  # the first on ties: the guess itself
        first = np.sqrt(dx[rows, best])
        dx[rows, best] = np.inf
        second = np.sqrt(dx.min(axis=1))
        # Centres outside the table are at least this far from the point.
        beyond = self.reach[guess] - own
        nearest = candidates[rows, best]
        unsure = np.flatnonzero(first > beyond)
        lower = np.minimum(second, beyond)
        if unsure.size:
            distance, index = _two_nearest(points[unsure], self.centres)
            first[unsure], lower[unsure] = distance[:, 0], distance[:, 1]
            nearest[unsure] = index[:, 0]
        return first, lower, nearest


def _lloyd(
    points: np.ndarray,
    weights: np.ndarray,
    centres: np.ndarray,
    tolerance: float,
    checkpoint: Callable[[], None],
) -> tuple[np.ndarray, np.ndarray]:
    """Weighted Lloyd iterations from the given centres (at least two).

    Stops when no point changes centre, when the centres move less than
    ``tolerance`` in total (sum of squared shifts), or after ``_MAX_ITER``
    iterations. A centre left without weight stays where it was. Returns the
    centres and the points' last assignment (their nearest centres before
    the last move: a close guess of the final assignment).

    Exact, but skips work as Hamerly's algorithm does: each point keeps an
    upper bound on the distance to its centre and a lower bound on the
    distance to any other centre; after the centres move, the bounds are
    loosened by how far they moved, and only points whose bounds overlap are
    measured again, against their centre's nearest centres first
    (:class:`_CentreNeighbours`). Late iterations, where few points are near
    a boundary, cost little.
    """
    k = centres.shape[0]
    weighted_x = weights * points[:, 0]
    weighted_y = weights * points[:, 1]
    if points.shape[0] * k <= _DENSE_LLOYD_LIMIT:
        return _lloyd_dense(points, weights, weighted_x, weighted_y, centres, tolerance, checkpoint)
    distance, nearest = _two_nearest(points, centres)
    labels, upper, lower = nearest[:, 0].copy(), distance[:, 0].copy(), distance[:, 1].copy()
    for iteration in range(_MAX_ITER):
        if iteration % 10 == 9:
            checkpoint()
        moved = _weighted_means(labels, weights, weighted_x, weighted_y, centres)
        shift = np.hypot(*(moved - centres).T)
        centres = moved
        if float((shift * shift).sum()) <= tolerance:
            break
        # Loosen the bounds by how far the centres moved.
        upper += shift[labels]
        largest = int(np.argmax(shift))
        second = float(np.partition(shift, -2)[-2]) if k > 1 else 0.0
        lower -= np.where(labels == largest, second, shift[largest])
        neighbours = _CentreNeighbours(centres)
        bound = np.maximum(lower, neighbours.separation[labels])
        suspect = np.flatnonzero(upper > bound)
        if suspect.size:
            # Tighten the upper bound first; search the centres only if still needed.
            own = centres[labels[suspect]]
            upper[suspect] = np.hypot(*(points[suspect] - own).T)
            suspect = suspect[upper[suspect] > bound[suspect]]
        if suspect.size == 0:
            break  # no point can change centre: converged
        first, closest_other, nearest = neighbours.nearest(points[suspect], labels[suspect])
        changed = np.count_nonzero(nearest != labels[suspect])
        labels[suspect] = nearest
        upper[suspect] = first
        lower[suspect] = closest_other
        if changed == 0:
            break  # same assignment: the centres are already its means
    return centres, labels


def _weighted_means(
    labels: np.ndarray,
    weights: np.ndarray,
    weighted_x: np.ndarray,
    weighted_y: np.ndarray,
    centres: np.ndarray,
) -> np.ndarray:
    """Lloyd's update: each centre moves to its points' weighted mean (empty ones stay)."""
    k = centres.shape[0]
    total = np.bincount(labels, weights, minlength=k)
    filled = total > 0
    moved = centres.copy()
    moved[filled, 0] = np.bincount(labels, weighted_x, minlength=k)[filled] / total[filled]
    moved[filled, 1] = np.bincount(labels, weighted_y, minlength=k)[filled] / total[filled]
    return moved


def _lloyd_dense(
    points: np.ndarray,
    weights: np.ndarray,
    weighted_x: np.ndarray,
    weighted_y: np.ndarray,
    centres: np.ndarray,
    tolerance: float,
    checkpoint: Callable[[], None],
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_lloyd` for small problems: every point measured on every iteration.

    The same iterations and stopping rules (so the same centres); on a few
    thousand distances, a dozen NumPy calls per iteration cost less than
    maintaining bounds.
    """
    labels = np.argmin(_squared_distances(points, centres), axis=1)
    for iteration in range(_MAX_ITER):
        if iteration % 10 == 9:
            checkpoint()
        moved = _weighted_means(labels, weights, weighted_x, weighted_y, centres)
        shift = moved - centres
        centres = moved
        if float((shift * shift).sum()) <= tolerance:
            break
        nearest = np.argmin(_squared_distances(points, centres), axis=1)
        if np.array_equal(nearest, labels):
            break  # same assignment: the centres are already its means
        labels = nearest
    return centres, labels


def _two_nearest(points: np.ndarray, centres: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distances to, and indices of, the two nearest centres of each point."""
    if points.shape[0] * centres.shape[0] <= _DENSE_ASSIGNMENT_LIMIT:
        squared = _squared_distances(points, centres)
        nearest = np.argpartition(squared, 1, axis=1)[:, :2]
        pair = np.take_along_axis(squared, nearest, axis=1)
        swap = pair[:, 1] < pair[:, 0]
        nearest[swap] = nearest[swap][:, ::-1]
        pair[swap] = pair[swap][:, ::-1]
        return np.sqrt(pair), nearest
    distance, nearest = cKDTree(centres).query(points, k=2)
    return distance, nearest.astype(np.intp)


def _assign_units(units: _Units, centres: np.ndarray, guess: np.ndarray) -> np.ndarray:
    """Index of each unit's nearest centre.

    ``guess``: the likely nearest centre of each point k-means ran on (cells
    or units). With compression, a cell whose centroid is much closer to its
    nearest centre than to any other (by more than twice the cell's reach)
    has all its units on that centre (triangle inequality); only the units of
    the other cells are measured.
    """
    if centres.shape[0] == 1:
        return np.zeros(units.n, dtype=np.intp)
    neighbours = _CentreNeighbours(centres)
    if not units.compressed:
        return neighbours.nearest(units.xy, guess)[2]
    first, lower, nearest = neighbours.nearest(units.cell_xy, guess)
    settled = lower - first > 2.0 * units.cell_reach * (1.0 + 1e-9) + 1e-9
    labels = nearest[units.unit_cell]
    unsettled_units = np.flatnonzero(~settled[units.unit_cell])
    if unsettled_units.size:
        labels[unsettled_units] = neighbours.nearest(
            units.xy[unsettled_units], labels[unsettled_units]
        )[2]
    return labels


def _kmeans_labels(units: _Units, k: int, checkpoint: Callable[[], None]) -> tuple[np.ndarray, int]:
    """Weighted k-means with k clusters; returns compact labels and the cluster count."""
    if k <= 1 or units.n == 1:
        return np.zeros(units.n, dtype=np.intp), 1
    centres = units.initial_centres(k, checkpoint)
    checkpoint()
    if centres.shape[0] == 1:
        return np.zeros(units.n, dtype=np.intp), 1
    centres, guess = _lloyd(units.cell_xy, units.cell_weight, centres, units.tolerance, checkpoint)
    labels = _assign_units(units, centres, guess)
    # Drop centres that ended up without units; keep the centres' order.
    used, labels = np.unique(labels, return_inverse=True)
    return labels.reshape(-1).astype(np.intp), int(used.size)


# ---------------------------------------------------------------------------
# Running work: threads, progress, cancellation
# ---------------------------------------------------------------------------


class _Runner:
    """Runs tasks on threads and funnels progress and cancellation.

    The caller's ``progress`` and ``is_cancelled`` are only ever called from
    the thread that called :meth:`TunedClustering.fit`; workers see a
    cancellation through a ``threading.Event``.
    """

    def __init__(
        self,
        n_workers: int,
        progress: Callable[[float, str], None] | None,
        is_cancelled: Callable[[], bool] | None,
    ):
        self.n_workers = n_workers
        self._progress = progress
        self._is_cancelled = is_cancelled
        self._main_thread = threading.get_ident()
        self._cancelled = threading.Event()
        self._lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None
        self._stage = (0.0, 1.0, 1)
        self._done = 0
        self._message = ""
        self._reported = -1.0

    # -- progress ---------------------------------------------------------

    def stage(self, start: float, end: float, total_trials: int, message: str) -> None:
        with self._lock:
            self._stage = (start, end, max(total_trials, 1))
            self._done = 0
            self._message = message
        self.report()

    def trial_done(self, message: str) -> None:
        with self._lock:
            self._done += 1
            self._message = message
        self.checkpoint()

    def report(self, fraction: float | None = None, message: str | None = None) -> None:
        if self._progress is None or threading.get_ident() != self._main_thread:
            return
        with self._lock:
            start, end, total = self._stage
            if fraction is None:
                fraction = start + (end - start) * min(self._done / total, 1.0)
            message = self._message if message is None else message
        fraction = min(max(fraction, self._reported, 0.0), 1.0)
        self._reported = fraction
        self._progress(fraction, message)

    # -- cancellation -----------------------------------------------------

    def checkpoint(self) -> None:
        """Raise ClusteringCancelled if cancelled; report progress on the main thread."""
        if threading.get_ident() == self._main_thread:
            if self._is_cancelled is not None and self._is_cancelled():
                self._cancelled.set()
            self.report()
        if self._cancelled.is_set():
            raise ClusteringCancelled("Clustering was cancelled.")

    # -- running ----------------------------------------------------------

    def map(self, function: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
        """``[function(item) for item in items]``, on threads when allowed."""
        on_main = threading.get_ident() == self._main_thread
        if self.n_workers <= 1 or len(items) <= 1 or not on_main:
            results = []
            for item in items:
                self.checkpoint()
                results.append(function(item))
            return results
        if self._executor is None:
            self._executor = ThreadPoolExecutor(
                max_workers=self.n_workers, thread_name_prefix="tuned-clustering"
            )
        futures: list[Future] = [self._executor.submit(function, item) for item in items]
        pending = set(futures)
        try:
            while pending:
                _, pending = wait(pending, timeout=0.05, return_when=FIRST_COMPLETED)
                self.checkpoint()
        except ClusteringCancelled:
            for future in futures:
                future.cancel()
            wait(futures)
            raise
        return [future.result() for future in futures]

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None


# ---------------------------------------------------------------------------
# The estimator
# ---------------------------------------------------------------------------


@dataclass
class _Cluster:
    cluster_id: str
    pass_number: int
    members: np.ndarray  # indices into the input, ascending
    weight: float
    final: bool = False  # cannot be split further
    status: str = "ok"  # see refine.STATUS_PRECEDENCE


@dataclass
class _StudyResult:
    labels: np.ndarray  # compact labels of the best clustering
    n_clusters: int
    best_k: int
    trials: list[tuple[int, int, float, float, float]]  # trial, k, score, med. weight, med. radius


class TunedClustering:
    """Weighted k-means with k tuned towards a desired cluster weight and radius.

    Parameters
    ----------
    desired_cluster_weight : float
        Target weight of a cluster (e.g. population per PSU). > 0.
    desired_cluster_radius : float
        Target minimum-enclosing-circle radius of a cluster, in metres. > 0.
    weight_importance_factor : float, default 1.0
        How much the weight term of the score counts relative to the radius
        term (``f_bias``). >= 0.
    max_cluster_weight : float, optional
        Clusters heavier than this are split in extra passes. Required when
        ``max_passes > 1``; must be >= ``desired_cluster_weight``.
    max_passes : int, default 1
        Maximum number of passes (1 = no splitting of oversized clusters).
    initial_max_trials : int, default 100
        Maximum number of values of k evaluated in pass 1 (an upper bound:
        the coarse-to-fine search usually needs far fewer).
    subsequent_max_trials : int, default 20
        Maximum number of values of k evaluated per oversized cluster.
    n_jobs : int, default 1
        Worker threads (-1: one per CPU). Results do not depend on it.
    random_state : int, default 42
        Seed; the same seed and data give the same clusters.
    min_cluster_weight : float, optional
        Lightest acceptable cluster; must be <= ``desired_cluster_weight``.
        Setting it turns the refinement on.
    max_cluster_radius : float, optional
        Largest acceptable minimum-enclosing-circle radius, metres (> 0).
        Setting it turns the refinement on. The weight range wins over it:
        a cluster that can only reach the minimum weight by growing wider is
        kept with status ``radius_over_max``.
    contiguity : bool, default True
        Make every cluster connected in the adjacency graph (a hard
        constraint of the refinement). With ``contiguity=False`` and neither
        ``min_cluster_weight`` nor ``max_cluster_radius`` set, no refinement
        runs: the tuned clusters are the result (the original's engine).
        Note that without ``min_cluster_weight`` the refinement still merges
        pieces lighter than half of ``desired_cluster_weight`` into a
        neighbour (the rule of :func:`~.refine.refine_partition`).
    neighbour_distance : float, optional
        Longest neighbour link, metres (> 0), when the adjacency graph is
        built here from irregular points (Delaunay edges up to this length);
        default inferred from the point spacing. Not used for a regular grid
        (its cells touch) nor when ``fit`` is given ``adjacency``.
    bridge_distance : float, optional
        With ``min_cluster_weight``: a connected piece of the data lighter
        than the minimum (a hamlet whose cells touch no other populated cell)
        is linked to the nearest other piece when the gap is at most this
        many metres, so that it joins a PSU instead of standing alone as an
        ``island_under_min``. Pieces heavy enough to stand alone are never
        linked. Default: no links (contiguity in the strict sense of the
        neighbour graph). See :func:`~.adjacency.bridge_light_pieces`.

    Notes
    -----
    Coordinates must be in metres (a projected CRS): use
    :func:`~tuned_grid_clustering.core.projection.project_to_metric` first.

    The refinement needs to know which units are neighbours. Pass
    ``fit(..., adjacency=...)`` when you know it (raster rows and columns,
    touching polygons: :func:`~.adjacency.build_adjacency`). Otherwise it is
    built with ``build_adjacency(xy_source, xy_metric=xy,
    neighbour_distance=neighbour_distance)``: a lattice graph when the
    coordinates lie on a regular grid, else a distance graph. A grid that is
    regular in longitude/latitude is not regular once projected, so for
    lon/lat grids pass ``xy_source=`` (the lon/lat coordinates) or
    ``adjacency``; with neither, the distance graph of the projected points
    is used, which also links each cell to its 8 neighbours on ordinary
    grids but may bridge narrow gaps.

    Edge cases: a single unit gives one cluster ``CLUSTER_001``; k never
    exceeds the number of units (nor the number of distinct weighted
    locations: surplus centres are dropped); a cluster that cannot be split
    (one unit, or k = 1 scores best) is kept as it is and not tried again;
    all-zero weights are rejected (no cluster could approach a target
    weight).
    """

    def __init__(
        self,
        desired_cluster_weight: float,
        desired_cluster_radius: float,
        weight_importance_factor: float = 1.0,
        max_cluster_weight: float | None = None,
        max_passes: int = 1,
        initial_max_trials: int = 100,
        subsequent_max_trials: int = 20,
        n_jobs: int = 1,
        random_state: int = 42,
        min_cluster_weight: float | None = None,
        max_cluster_radius: float | None = None,
        contiguity: bool = True,
        neighbour_distance: float | None = None,
        bridge_distance: float | None = None,
    ):
        self.desired_cluster_weight = desired_cluster_weight
        self.desired_cluster_radius = desired_cluster_radius
        self.weight_importance_factor = weight_importance_factor
        self.max_cluster_weight = max_cluster_weight
        self.max_passes = max_passes
        self.initial_max_trials = initial_max_trials
        self.subsequent_max_trials = subsequent_max_trials
        self.n_jobs = n_jobs
        self.random_state = random_state
        self.min_cluster_weight = min_cluster_weight
        self.max_cluster_radius = max_cluster_radius
        self.contiguity = contiguity
        self.neighbour_distance = neighbour_distance
        self.bridge_distance = bridge_distance
        self._validate_params()

    @property
    def refines(self) -> bool:
        """True when ``fit`` refines the tuned clusters into guaranteed PSUs."""
        return (
            bool(self.contiguity)
            or self.min_cluster_weight is not None
            or self.max_cluster_radius is not None
        )

    # -- parameters -------------------------------------------------------

    def get_params(self) -> dict[str, Any]:
        """The constructor parameters, as a dict (scikit-learn convention)."""
        return {
            "desired_cluster_weight": self.desired_cluster_weight,
            "desired_cluster_radius": self.desired_cluster_radius,
            "weight_importance_factor": self.weight_importance_factor,
            "max_cluster_weight": self.max_cluster_weight,
            "max_passes": self.max_passes,
            "initial_max_trials": self.initial_max_trials,
            "subsequent_max_trials": self.subsequent_max_trials,
            "n_jobs": self.n_jobs,
            "random_state": self.random_state,
            "min_cluster_weight": self.min_cluster_weight,
            "max_cluster_radius": self.max_cluster_radius,
            "contiguity": self.contiguity,
            "neighbour_distance": self.neighbour_distance,
            "bridge_distance": self.bridge_distance,
        }

    def __repr__(self) -> str:
        args = ", ".join(f"{name}={value!r}" for name, value in self.get_params().items())
        return f"TunedClustering({args})"

    def _validate_params(self) -> None:
        """Check every parameter; raise ClusteringInputError naming problem and fix."""

        def positive(name: str, value: Any, what: str) -> None:
            if not _is_real(value) or not math.isfinite(value) or value <= 0:
                raise ClusteringInputError(
                    f"{name} must be a positive number ({what}), got {value!r}. "
                    f"Set {name} to a value greater than 0."
                )

        def count(name: str, value: Any, fix: str) -> None:
            if not _is_integer(value) or value < 1:
                raise ClusteringInputError(
                    f"{name} must be a whole number of at least 1, got {value!r}. {fix}"
                )

        positive("desired_cluster_weight", self.desired_cluster_weight, "target cluster weight")
        positive("desired_cluster_radius", self.desired_cluster_radius, "target radius in metres")
        factor = self.weight_importance_factor
        if not _is_real(factor) or not math.isfinite(factor) or factor < 0:
            raise ClusteringInputError(
                f"weight_importance_factor must be a number >= 0, got {factor!r}. "
                "Use 1 to weigh the weight and radius targets equally."
            )
        if self.max_cluster_weight is not None:
            positive("max_cluster_weight", self.max_cluster_weight, "weight above which to split")
            if self.max_cluster_weight < self.desired_cluster_weight:
                raise ClusteringInputError(
                    f"max_cluster_weight ({self.max_cluster_weight}) is below "
                    f"desired_cluster_weight ({self.desired_cluster_weight}), so clusters of "
                    "the desired weight would count as oversized. Set max_cluster_weight to "
                    "at least desired_cluster_weight."
                )
        count("max_passes", self.max_passes, "Use 1 for a single pass.")
        if self.max_passes > 1 and self.max_cluster_weight is None:
            raise ClusteringInputError(
                f"max_passes is {self.max_passes} but max_cluster_weight is not set, so no "
                "cluster can be found oversized. Set max_cluster_weight, or max_passes to 1."
            )
        count("initial_max_trials", self.initial_max_trials, "The default is 100.")
        count("subsequent_max_trials", self.subsequent_max_trials, "The default is 20.")
        if not _is_integer(self.n_jobs) or self.n_jobs == 0 or self.n_jobs < -1:
            raise ClusteringInputError(
                f"n_jobs must be -1 (one thread per CPU) or a whole number >= 1, got "
                f"{self.n_jobs!r}. Use 1 to run in the calling thread only."
            )
        if not _is_integer(self.random_state) or self.random_state < 0:
            raise ClusteringInputError(
                f"random_state must be a whole number >= 0, got {self.random_state!r}. "
                "The default is 42."
            )
        if self.min_cluster_weight is not None:
            positive("min_cluster_weight", self.min_cluster_weight, "lightest acceptable cluster")
            if self.min_cluster_weight > self.desired_cluster_weight:
                raise ClusteringInputError(
                    f"min_cluster_weight ({self.min_cluster_weight}) is above "
                    f"desired_cluster_weight ({self.desired_cluster_weight}), so clusters of "
                    "the desired weight would count as too light. Set min_cluster_weight to "
                    "at most desired_cluster_weight."
                )
        if self.max_cluster_radius is not None:
            positive("max_cluster_radius", self.max_cluster_radius, "radius cap in metres")
        if not isinstance(self.contiguity, (bool, np.bool_)):
            raise ClusteringInputError(
                f"contiguity must be True or False, got {self.contiguity!r}. Use True to "
                "keep every cluster connected."
            )
        if self.neighbour_distance is not None:
            positive(
                "neighbour_distance", self.neighbour_distance, "longest neighbour link in metres"
            )
        if self.bridge_distance is not None:
            positive("bridge_distance", self.bridge_distance, "longest gap to bridge in metres")

    def _validate_data(
        self, xy: Any, weights: Any, adjacency: Any = None, xy_source: Any = None
    ) -> tuple[np.ndarray, np.ndarray, sparse.csr_matrix | None, np.ndarray | None]:
        """Check and convert the units' coordinates, weights, graph and source coordinates."""
        try:
            xy = np.asarray(xy, dtype=float)
        except (TypeError, ValueError) as error:
            raise ClusteringInputError(
                f"xy could not be read as numbers ({error}). Pass an (n, 2) array of "
                "x, y coordinates in metres."
            ) from error
        if xy.size == 0:
            raise ClusteringInputError(
                "There are no units to cluster (the input is empty). Check the input layer "
                "and any filter or selection applied to it."
            )
        if xy.ndim != 2 or xy.shape[1] != 2:
            raise ClusteringInputError(
                f"xy must have shape (n, 2) (one x, y pair per unit), got {xy.shape}. "
                "Stack the coordinates, e.g. numpy.column_stack([x, y])."
            )
        n = xy.shape[0]
        bad = ~np.isfinite(xy).all(axis=1)
        if bad.any():
            raise ClusteringInputError(
                f"{int(bad.sum())} unit(s) have missing or infinite coordinates (first at "
                f"row {int(np.flatnonzero(bad)[0])}). Remove them or fix their geometry."
            )
        if weights is None:
            weights = np.ones(n)
        else:
            try:
                weights = np.asarray(weights, dtype=float).reshape(-1)
            except (TypeError, ValueError) as error:
                raise ClusteringInputError(
                    f"weights could not be read as numbers ({error}). Use a numeric field."
                ) from error
            if weights.shape != (n,):
                raise ClusteringInputError(
                    f"weights has {weights.shape[0]} values for {n} units. Pass one weight "
                    "per unit, or None for a weight of 1 each."
                )
            bad = ~np.isfinite(weights)
            if bad.any():
                raise ClusteringInputError(
                    f"{int(bad.sum())} weight(s) are missing (NaN) or infinite (first at row "
                    f"{int(np.flatnonzero(bad)[0])}). Fill them in (e.g. with 0) or remove "
                    "those units."
                )
            negative = weights < 0
            if negative.any():
                raise ClusteringInputError(
                    f"{int(negative.sum())} weight(s) are negative (first at row "
                    f"{int(np.flatnonzero(negative)[0])}: {weights[negative][0]}). Weights "
                    "must be >= 0; fix or remove those units."
                )
            if not weights.sum() > 0:
                raise ClusteringInputError(
                    "All weights are zero, so no cluster can approach the desired weight. "
                    "Choose a weight field with positive values, or use no weight field "
                    "(a weight of 1 per unit)."
                )
        span = float(np.max(xy.max(axis=0) - xy.min(axis=0)))
        looks_like_degrees = np.all(np.abs(xy[:, 0]) <= 180) and np.all(np.abs(xy[:, 1]) <= 90)
        if looks_like_degrees and n > 1 and self.desired_cluster_radius > span:
            warnings.warn(
                "The coordinates look like longitude/latitude degrees: the desired radius "
                f"({self.desired_cluster_radius} m) is larger than the whole data's extent "
                f"({span:.4g} units). Project the units to metres first, e.g. with "
                "core.projection.project_to_metric.",
                UserWarning,
                stacklevel=3,
            )
        return xy, weights, _checked_adjacency(adjacency, n), _checked_source(xy_source, n)

    # -- fitting ----------------------------------------------------------

    def fit(
        self,
        xy: Any,
        weights: Any = None,
        *,
        adjacency: Any = None,
        xy_source: Any = None,
        progress: Callable[[float, str], None] | None = None,
        is_cancelled: Callable[[], bool] | None = None,
    ) -> ClusteringResult:
        """Cluster the units.

        Parameters
        ----------
        xy : array-like of shape (n, 2)
            Unit coordinates in metres (projected CRS).
        weights : array-like of shape (n,), optional
            Non-negative unit weights; default 1 per unit.
        adjacency : scipy.sparse matrix of shape (n, n), optional
            Symmetric graph of neighbouring units (non-zero = neighbours),
            e.g. ``core.adjacency.build_adjacency(...).matrix``. Used by the
            refinement and for ``quality["share_contiguous"]``. Default: built
            from ``xy_source`` (or ``xy``) when the refinement runs, see the
            class notes.
        xy_source : array-like of shape (n, 2), optional
            The units' coordinates in their source CRS (e.g. lon/lat), only
            to recognise a regular grid when ``adjacency`` is built here.
        progress : callable, optional
            ``progress(fraction, message)``, called after each trial and pass
            with a fraction rising from 0 to 1.
        is_cancelled : callable, optional
            Polled between trials, k-means fits and refinement steps; when it
            returns True, :class:`ClusteringCancelled` is raised.

        Returns
        -------
        ClusteringResult

        Raises
        ------
        ClusteringInputError
            Invalid parameters or data (the message says how to fix it).
        ClusteringCancelled
            ``is_cancelled()`` returned True.
        """
        self._validate_params()
        xy, weights, graph, xy_source = self._validate_data(xy, weights, adjacency, xy_source)
        n_workers = (os.cpu_count() or 1) if self.n_jobs == -1 else int(self.n_jobs)
        runner = _Runner(n_workers, progress, is_cancelled)
        try:
            return self._fit(xy, weights, graph, xy_source, runner)
        finally:
            runner.close()

    def _fit(
        self,
        xy: np.ndarray,
        weights: np.ndarray,
        graph: sparse.csr_matrix | None,
        xy_source: np.ndarray | None,
        runner: _Runner,
    ) -> ClusteringResult:
        n = xy.shape[0]
        multi_pass = self.max_passes > 1
        refines = self.refines
        # The refinement takes about as long as the tuned passes on large data.
        tuned_end = _TUNED_SHARE_WITH_REFINEMENT if refines else 0.95
        pass_one_end = tuned_end * 0.6 / 0.95 if multi_pass else tuned_end
        planned = self._planned_trials(float(weights.sum()), n, self.initial_max_trials)
        runner.stage(0.0, pass_one_end, planned, "Pass 1: searching k")
        runner.checkpoint()

        seed = (int(self.random_state),)
        top = self._study(
            xy,
            weights,
            np.arange(n),
            self.initial_max_trials,
            seed,
            runner,
            "Pass 1",
            allow_parallel=True,
        )
        trial_rows = [(1, None, *row) for row in top.trials]
        clusters = _children(CLUSTER_PREFIX, 3, 1, np.arange(n), top, weights)

        oversized_history: list[int] = []
        pass_number = 1
        progress_left = (pass_one_end, tuned_end)
        while multi_pass and pass_number < self.max_passes:
            oversized = [c for c in clusters if c.weight > self.max_cluster_weight]
            oversized_history.append(len(oversized))
            if not oversized:
                break
            if len(oversized_history) >= 3 and len(set(oversized_history[-3:])) == 1:
                break  # no progress over three passes (the original's rule)
            to_split = [c for c in oversized if not c.final]
            if not to_split:
                break  # only clusters that cannot be split are left
            pass_number += 1
            label = f"Pass {pass_number}"
            # Each pass gets half of the progress bar that is left.
            start, end = progress_left
            middle = (start + end) / 2
            progress_left = (middle, end)
            planned = sum(
                self._planned_trials(c.weight, c.members.size, self.subsequent_max_trials)
                for c in to_split
            )
            runner.stage(
                start, middle, planned, f"{label}: splitting {len(to_split)} oversized cluster(s)"
            )

            def split(parent: _Cluster, label: str = label) -> _StudyResult | None:
                if parent.members.size < 2:
                    return None
                seed = (int(self.random_state), zlib.crc32(parent.cluster_id.encode("utf-8")))
                return self._study(
                    xy,
                    weights,
                    parent.members,
                    self.subsequent_max_trials,
                    seed,
                    runner,
                    f"{label}, {parent.cluster_id}",
                    allow_parallel=False,
                )

            replaced: dict[str, list[_Cluster]] = {}
            for parent, outcome in zip(to_split, runner.map(split, to_split)):
                if outcome is not None:
                    trial_rows.extend((pass_number, parent.cluster_id, *r) for r in outcome.trials)
                if outcome is None or outcome.n_clusters < 2:
                    # Same data and seed would give the same answer: keep it as it is.
                    parent.final = True
                    continue
                replaced[parent.cluster_id] = _children(
                    f"{parent.cluster_id}_", 2, pass_number, parent.members, outcome, weights
                )
            clusters = [child for c in clusters for child in replaced.get(c.cluster_id, [c])]
            runner.report(message=f"{label}: done")

        clusters = sorted(clusters, key=lambda c: c.cluster_id)
        graph_info: dict[str, Any] = {
            "adjacency": None if graph is None else "adjacency given by the caller"
        }
        if refines:
            runner.stage(tuned_end, 0.95, 1, "Refinement: building the neighbour graph")
            runner.checkpoint()
            if graph is None:
                info = build_adjacency(
                    xy if xy_source is None else xy_source,
                    xy_metric=xy,
                    neighbour_distance=self.neighbour_distance,
                )
                graph = info.matrix
                graph_info["adjacency"] = info.describe()
                if info.kind == "distance":
                    graph_info["neighbour_distance"] = float(info.max_distance)
            if self.bridge_distance is not None and self.min_cluster_weight is not None:
                graph, n_links = bridge_light_pieces(
                    graph, xy, weights, self.min_cluster_weight, self.bridge_distance
                )
                graph_info["bridges"] = n_links
            clusters, quality = self._refine(
                xy, weights, clusters, pass_number + 1, graph, runner, tuned_end
            )
        else:
            quality = self._tuned_quality(weights, clusters, graph)
        quality.update(graph_info)
        runner.report(0.95, "Summarising clusters")
        result = self._summarise(xy, weights, clusters, trial_rows, top.best_k, quality)
        runner.report(1.0, f"Done: {result.n_clusters} clusters")
        return result

    def _planned_trials(self, total_weight: float, n_units: int, max_trials: int) -> int:
        """About how many trials a search will make (for the progress bar only)."""
        k0 = expected_n_clusters(total_weight, self.desired_cluster_weight, n_units)
        return expected_trials(search_space(k0, n_units), max_trials)

    def _study(
        self,
        xy: np.ndarray,
        weights: np.ndarray,
        members: np.ndarray,
        max_trials: int,
        seed: tuple[int, ...],
        runner: _Runner,
        label: str,
        allow_parallel: bool,
    ) -> _StudyResult:
        """Search the best k for one set of units (all of them, or one cluster's)."""
        sub_weights = weights[members]
        n = members.size
        k0 = expected_n_clusters(float(sub_weights.sum()), self.desired_cluster_weight, n)
        bounds = search_space(k0, n)
        units = _Units(
            xy[members],
            sub_weights,
            _CELL_FRACTION * self.desired_cluster_radius,
            bounds[1],
            seed,
        )
        medians: dict[int, tuple[float, float]] = {}
        # Only the best clustering so far is kept (smallest score, then k,
        # as in search_k), so memory does not grow with the number of trials.
        best: dict[str, Any] = {"key": (math.inf, math.inf)}
        lock = threading.Lock()

        def evaluate_one(k: int) -> float:
            runner.checkpoint()
            labels, n_clusters = _kmeans_labels(units, k, runner.checkpoint)
            cluster_weight = np.bincount(labels, units.weights, minlength=n_clusters)
            radius = cluster_radii(units.xy, labels, n_clusters)
            median_weight = float(np.median(cluster_weight))
            median_radius = float(np.median(radius))
            score = clustering_score(
                median_weight,
                median_radius,
                self.desired_cluster_weight,
                self.desired_cluster_radius,
                self.weight_importance_factor,
            )
            with lock:
                medians[k] = (median_weight, median_radius)
                if (score, k) < best["key"]:
                    best.update(key=(score, k), labels=labels, n_clusters=n_clusters)
            runner.trial_done(f"{label}: k={k}, score={score:.1f}")
            return score

        def evaluate(batch: list[int]) -> list[float]:
            if allow_parallel:
                return runner.map(evaluate_one, batch)
            return [evaluate_one(k) for k in batch]

        outcome = search_k(
            bounds, max_trials, evaluate, k_start=k0, seed=zlib.crc32(repr(seed).encode())
        )
        trials = [
            (index, k, score, *medians[k]) for index, (k, score) in enumerate(outcome.evaluated)
        ]
        assert best["key"][1] == outcome.best_k
        return _StudyResult(best["labels"], best["n_clusters"], outcome.best_k, trials)

    def _refine(
        self,
        xy: np.ndarray,
        weights: np.ndarray,
        clusters: list[_Cluster],
        refinement_pass: int,
        graph: sparse.csr_matrix,
        runner: _Runner,
        progress_start: float,
    ) -> tuple[list[_Cluster], dict[str, Any]]:
        """Refine the tuned clusters (sorted by id) into guaranteed PSUs; new ids and passes.

        See the module doc for the id rules. Returns the clusters and the
        quality figures.
        """
        labels = np.empty(xy.shape[0], dtype=np.intp)
        for code, cluster in enumerate(clusters):
            labels[cluster.members] = code
        message = "Refinement: connected clusters"
        if self.min_cluster_weight is not None or self.max_cluster_weight is not None:
            message += ", weight in range"
        if self.max_cluster_radius is not None:
            message += ", radius capped"
        # The refinement polls between its steps (about once per re-cut group).
        runner.stage(progress_start, 0.95, len(clusters), message)

        def poll() -> bool:
            runner.trial_done(message)  # reports progress; raises when cancelled
            return False

        outcome = refine_partition(
            labels,
            xy,
            weights,
            graph,
            target_weight=self.desired_cluster_weight,
            min_weight=self.min_cluster_weight,
            max_weight=self.max_cluster_weight,
            max_radius=self.max_cluster_radius,
            contiguity=bool(self.contiguity),
            random_state=int(self.random_state),
            is_cancelled=poll,
        )
        parents = outcome.parent.astype(np.intp)
        child_index = outcome.child_index
        n_children = np.bincount(parents, minlength=len(clusters))
        refined = []
        for code, members in enumerate(_members_by_label(outcome.labels, outcome.n_clusters)):
            parent = clusters[int(parents[code])]
            status = str(outcome.status[code])
            if outcome.unchanged[code]:
                refined.append(replace(parent, status=status))
                continue
            child = int(child_index[code])
            cluster_id = parent.cluster_id
            if child:
                width = max(2, len(str(int(n_children[parents[code]]))))
                cluster_id = f"{parent.cluster_id}_{child:0{width}d}"
            weight = float(weights[members].sum())
            refined.append(_Cluster(cluster_id, refinement_pass, members, weight, status=status))
        if len({c.cluster_id for c in refined}) != len(refined):
            raise AssertionError("refined cluster ids are not unique")  # never: ids are a tree
        summary = outcome.summary
        quality = {
            "share_in_range": summary.share_in_range,
            "share_contiguous": summary.share_connected,
            "share_within_radius": summary.share_within_radius,
            "share_ok": summary.share_ok,
            "status_counts": dict(summary.status_counts),
        }
        return sorted(refined, key=lambda c: c.cluster_id), quality

    def _tuned_quality(
        self, weights: np.ndarray, clusters: list[_Cluster], graph: sparse.csr_matrix | None
    ) -> dict[str, Any]:
        """Status of each tuned cluster (set on it) and the quality figures, no refinement.

        Only ``max_cluster_weight`` can be missed (no minimum nor radius cap
        without refinement); contiguity is measured when a graph is given.
        """
        labels = np.empty(weights.shape[0], dtype=np.intp)
        for code, cluster in enumerate(clusters):
            labels[cluster.members] = code
        status = cluster_status(labels, weights, None, graph, max_weight=self.max_cluster_weight)
        connected = cluster_connectivity(labels, graph) if graph is not None else None
        summary = summarize_partition(
            labels,
            weights,
            max_weight=self.max_cluster_weight,
            status=status,
            connected=connected if connected is not None else np.ones(len(clusters), bool),
        )
        for cluster, value in zip(clusters, status.tolist()):
            cluster.status = str(value)
        return {
            "share_in_range": summary.share_in_range,
            "share_contiguous": None if connected is None else summary.share_connected,
            "share_within_radius": summary.share_within_radius,
            "share_ok": summary.share_ok,
            "status_counts": dict(summary.status_counts),
        }

    def _summarise(
        self,
        xy: np.ndarray,
        weights: np.ndarray,
        clusters: list[_Cluster],
        trial_rows: list[tuple],
        best_k: int,
        quality: dict[str, Any],
    ) -> ClusteringResult:
        clusters = sorted(clusters, key=lambda c: c.cluster_id)
        n = xy.shape[0]
        labels = np.empty(n, dtype=np.intp)
        for code, cluster in enumerate(clusters):
            labels[cluster.members] = code
        n_clusters = len(clusters)
        centre_x, centre_y, radius = cluster_circles(xy, labels, n_clusters)
        ids = np.array([c.cluster_id for c in clusters], dtype=object)
        passes = np.array([c.pass_number for c in clusters], dtype=np.int64)
        table = pd.DataFrame(
            {
                "cluster_id": ids,
                "weight": np.bincount(labels, weights, minlength=n_clusters),
                "radius_m": radius,
                "n_units": np.bincount(labels, minlength=n_clusters).astype(np.int64),
                "pass": passes,
                "centre_x": centre_x,
                "centre_y": centre_y,
                "status": np.array([c.status for c in clusters], dtype=object),
            },
            columns=CLUSTER_COLUMNS,
        )
        trials = pd.DataFrame(trial_rows, columns=TRIAL_COLUMNS)
        trials = trials.astype(
            {
                "pass": np.int64,
                "trial": np.int64,
                "k": np.int64,
                "score": float,
                "median_weight": float,
                "median_radius_m": float,
            }
        )
        trials["parent_id"] = trials["parent_id"].astype(object)
        trials.loc[trials["pass"] == 1, "parent_id"] = None
        return ClusteringResult(
            labels=labels,
            cluster_ids=ids[labels],
            cluster_pass=passes[labels],
            clusters=table,
            trials=trials,
            best_k=int(best_k),
            params=self.get_params(),
            quality=quality,
        )


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------


def _is_integer(value: Any) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def _checked_adjacency(adjacency: Any, n: int) -> sparse.csr_matrix | None:
    """The neighbour graph as CSR, or a ClusteringInputError naming the problem."""
    if adjacency is None:
        return None
    if not sparse.issparse(adjacency):
        try:
            adjacency = np.asarray(adjacency, dtype=float)
        except (TypeError, ValueError) as error:
            raise ClusteringInputError(
                f"adjacency could not be read as a matrix ({error}). Pass a scipy.sparse "
                "(n, n) matrix, e.g. core.adjacency.build_adjacency(...).matrix."
            ) from error
    if getattr(adjacency, "ndim", 2) != 2 or adjacency.shape != (n, n):
        raise ClusteringInputError(
            f"adjacency must have shape ({n}, {n}) (one row and column per unit), got "
            f"{getattr(adjacency, 'shape', None)}. Build it for the same units, in the same "
            "order, e.g. with core.adjacency.build_adjacency(...).matrix."
        )
    graph = sparse.csr_matrix(adjacency)
    if graph.nnz and not np.all(np.isfinite(graph.data)):
        raise ClusteringInputError(
            "adjacency has missing or infinite entries. Use 1 for neighbours and 0 (or no "
            "entry) otherwise."
        )
    return graph


def _checked_source(xy_source: Any, n: int) -> np.ndarray | None:
    """Source-CRS coordinates (for the lattice test of the adjacency), checked."""
    if xy_source is None:
        return None
    try:
        xy_source = np.asarray(xy_source, dtype=float)
    except (TypeError, ValueError) as error:
        raise ClusteringInputError(
            f"xy_source could not be read as numbers ({error}). Pass the units' (n, 2) "
            "coordinates in their source CRS (e.g. lon/lat), or leave it out."
        ) from error
    if xy_source.shape != (n, 2) or not np.isfinite(xy_source).all():
        raise ClusteringInputError(
            f"xy_source must be finite with shape ({n}, 2) like xy, got shape "
            f"{xy_source.shape}. Pass the same units in their source CRS, or leave it out."
        )
    return xy_source


def _children(
    prefix: str,
    min_digits: int,
    pass_number: int,
    members: np.ndarray,
    outcome: _StudyResult,
    weights: np.ndarray,
) -> list[_Cluster]:
    """Clusters of a study's best clustering, numbered from 1 in k-means label order.

    Numbers are zero-padded to ``max(min_digits, digits needed)``.
    """
    width = max(min_digits, len(str(outcome.n_clusters)))
    return [
        _Cluster(
            f"{prefix}{index + 1:0{width}d}",
            pass_number,
            members[local],
            float(weights[members[local]].sum()),
        )
        for index, local in enumerate(_members_by_label(outcome.labels, outcome.n_clusters))
    ]


def _members_by_label(labels: np.ndarray, n_clusters: int) -> list[np.ndarray]:
    """Indices of each label's members (ascending), label by label."""
    order = np.argsort(labels, kind="stable")
    bounds = np.searchsorted(labels[order], np.arange(n_clusters + 1))
    return [order[bounds[i] : bounds[i + 1]] for i in range(n_clusters)]
