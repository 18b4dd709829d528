"""Refine a clustering into guaranteed PSUs: connected, weight in range, radius capped.

The tuned k-means aims only the *median* cluster weight at the target, and
k-means knows nothing about which units are neighbours. A PSU, though, must

(a) be connected in the adjacency graph (:mod:`.adjacency`),
(b) weigh between ``min_weight`` and ``max_weight``,
(c) have a minimum-enclosing-circle radius up to ``max_radius`` (metres).

:func:`refine_partition` (or :class:`PartitionRefiner`) takes any partition
(k-means labels) and repairs it on the adjacency graph. A cluster that
already satisfies everything is kept as it is, unless a neighbour that cannot
stand alone must join it or it is re-cut with a violating neighbour.

Algorithm
---------
1. **Pieces.** Every unit heavier than ``max_weight`` becomes a cluster of its
   own (``single_unit_over_max``). Each input cluster is cut into its
   connected pieces (connected components of the graph restricted to edges
   inside one cluster: one sparse-graph pass over all units).
2. **Groups.** Light pieces (under ``min_weight``; sparse areas, fragments)
   pool with every adjacent light piece. Then, lightest first, a group whose
   weight admits no valid number of parts -- under ``min_weight``, or in a gap
   such as (max, 2 min) where neither one nor two clusters fit -- merges with
   the adjacent group with the nearest centroid, until its weight is feasible
   or it has no neighbour left (an island: ``island_under_min``).
3. **Partition.** A group that is one valid piece is kept untouched. Any other
   group is cut into ``m`` parts: the feasible count nearest
   ``weight / target_weight``, raised when the group is much wider than
   ``max_radius``. The cut is a balanced centroidal power diagram (convex,
   compact cells of equal weight; started from a recursive bisection; on
   large blocks the centres settle on a sample of the units first); stray
   fragments then join the neighbouring part they touch most, which keeps
   every part connected. Should that miss the weight range by more than
   half a part's weight, and a connected recursive bisection along straight
   lines miss it by less, the bisection is used; smaller misses are left to
   the local search.
4. **Radius.** Clusters wider than ``max_radius`` and heavy enough for two
   parts are cut again.
5. **Local search.** Each cluster whose weight is still out of range is
   re-cut together with an adjacent cluster (straight cuts and power
   diagrams, into the part counts the union's weight allows, including one
   more cluster when that helps the radius), or with a third cluster when
   no pair helps; a re-cut is kept only when it lowers the weight excess, or
   keeps it and lowers the radius excess without widening the widest cluster
   involved. Failed attempts are remembered, so each pass only retries what
   changed (never the clusters of a re-cut just made), and another pass
   follows only a pass that made clear progress.
6. **Fewer clusters over the cap** (:mod:`.radius_tail`). Where clusters
   still exceed the radius cap, the wide part of the map is re-assigned
   under radius budgets -- the cap for all but the few widest, which keep
   at most the widest radius so far -- with the weights balanced by a small
   linear program over transfers between clusters, round after round while
   the number over the cap falls. Pair re-cuts cannot do this: every
   cluster around is near the minimum weight, so area has to move across
   many clusters at once. A high percentile of the radii counts clusters,
   so this is what lowers it.

Every step keeps each cluster connected (when ``contiguity`` is on), and every
unit ends up in exactly one cluster. Nothing is random: the result depends
only on the input (``random_state`` is accepted for API symmetry). The weight
range is treated as harder than the radius cap: a cut that fixes a weight is
kept even when it widens a cluster.

Costs are a few linear passes over the units (NumPy and
``scipy.sparse.csgraph`` on int32 index arrays; on a lattice the neighbours
are a padded table, so induced subgraphs are one gather) plus work per
violating cluster, and step 6 works on blocks of a few units; on the
69,226-cell Philippines grid the whole refinement takes about 0.4 s.

Status precedence
-----------------
A cluster gets the first status that applies, in this order:
``single_unit_over_max`` (one unit, heavier than max), ``island_under_min``
(under min with no neighbouring cluster to merge with, apart from
single-unit-over-max clusters), ``over_max``, ``under_min``,
``radius_over_max``, ``ok``.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from scipy import sparse
from scipy.sparse.csgraph import connected_components

from .errors import ClusteringCancelled, ClusteringInputError
from .geometry import cluster_radii
from .pieces import (
    components_within,
    edge_offsets,
    edge_rows,
    pieces_per_cluster,
    reattach_fragments,
)
from .radius_tail import fewer_over_cap

STATUS_OK = "ok"
STATUS_SINGLE_UNIT_OVER_MAX = "single_unit_over_max"
STATUS_ISLAND_UNDER_MIN = "island_under_min"
STATUS_OVER_MAX = "over_max"
STATUS_UNDER_MIN = "under_min"
STATUS_RADIUS_OVER_MAX = "radius_over_max"
# First applicable status wins.
STATUS_PRECEDENCE = (
    STATUS_SINGLE_UNIT_OVER_MAX,
    STATUS_ISLAND_UNDER_MIN,
    STATUS_OVER_MAX,
    STATUS_UNDER_MIN,
    STATUS_RADIUS_OVER_MAX,
    STATUS_OK,
)

# Bisection: extra directions tried besides the principal axis (radians).
_EXTRA_ANGLES = (math.pi / 2, math.pi / 4, -math.pi / 4)
# Bisection: weight of balance (per-part deviation from the target, as a
# share of the target) against the bounding radius in the cut's cost.
_BALANCE_WEIGHT = 0.5
# A side that will be split again keeps its per-part average this share of
# the range away from the bounds, so that its own bisection has room.
_INNER_MARGIN = 0.15
# Local search: at most this many passes over the violating clusters (on
# ph_grids over ten seeds, a third pass changed p90 and max radii nowhere and
# cost about 10% of the refinement).
_MAX_LOCAL_PASSES = 2
# Local search: neighbours tried per violating cluster, and cut lines per pair.
_LOCAL_NEIGHBOURS = 4
_LOCAL_CUTS = 2
# Local search: third clusters tried when no pair fixes a weight.
_LOCAL_THIRDS = 3
# Power diagram: iterations and accepted relative weight error.
_POWER_ITERATIONS = 40
_POWER_TOLERANCE = 0.01
# Power diagram: centres move to their part's centroid in the first this many
# iterations only; then the powers alone balance the weights, which converges
# where moving centres kept undoing the balance (on ph_grids with six seeds:
# about a third less radius excess, smaller maximum radii, and faster).
_POWER_CENTRE_MOVES = 25
# Power diagram: with at least this many units per part, the centres settle
# on every _COARSE_STRIDE-th unit first; then at most _FINE_ITERATIONS rounds
# balance the powers on all units (on ph_grids the dense 43k-unit block costs
# half as much). Sparser blocks keep all units: there a sampled unit would
# carry too large a share of a part's weight for the balance to converge.
_COARSE_MIN_UNITS = 1500
_COARSE_STRIDE = 3
_FINE_ITERATIONS = 15
# Power diagram: the connected recursive bisection is tried as well only when
# the diagram's parts miss the weight range by more than this share of a part
# in all. Smaller misses (a fragment moved when connectivity was restored)
# are left to the local search, which on ph_grids over ten seeds ends with
# smaller radii than the bisection's straight cuts, and sooner.
_FALLBACK_MISS = 0.5
# Induced subgraphs use a padded neighbour table when it holds at most this
# many times the edges (regular lattices: 8 neighbours, fewer at borders).
_PADDED_SLACK = 1.3
# Power diagram: larger part counts are bisected into blocks first.
_POWER_MAX_PARTS = 24
# Grouping: light pieces pool with all adjacent light pieces.
_POOL_LIGHT_PIECES = True
# A group as wide as r is cut in at least (factor * r / cap)^2 parts.
_RADIUS_SPLIT_FACTOR = 1.3
# New parts aim this share of the weight range above the minimum.
_PART_MARGIN = 0.03
# Local search: scores closer than this are equal; a re-cut may widen the
# widest cluster involved by this factor at most.
_SCORE_TOLERANCE = 1e-9
_WIDEST_SLACK = 1.0001
# Local search: another pass follows only a pass that fixed a cluster, lowered
# the weight excess, or lowered the radius excess by this share.
_PASS_RADIUS_GAIN = 0.05
_HALF_SQRT2 = math.sqrt(0.5)


# ---------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class PartitionSummary:
    """Quality figures of a partition (see :func:`summarize_partition`).

    Shares are in [0, 1] over clusters; ``share_within_radius`` is 1.0 when no
    radius cap was given; radius figures are NaN when no coordinates were given.
    """

    n_clusters: int
    share_in_range: float
    share_connected: float
    share_within_radius: float
    share_ok: float
    status_counts: dict
    weight_min: float
    weight_median: float
    weight_max: float
    radius_median: float
    radius_p90: float
    radius_max: float

    def as_dict(self) -> dict:
        """Plain dict (for logs and JSON)."""
        return dict(self.__dict__)

    def format(self) -> str:
        """A few human-readable lines."""
        counts = ", ".join(f"{k}: {v}" for k, v in sorted(self.status_counts.items()))
        return (
            f"{self.n_clusters} clusters; in weight range {self.share_in_range:.1%}, "
            f"connected {self.share_connected:.1%}, within radius cap "
            f"{self.share_within_radius:.1%}, ok {self.share_ok:.1%}\n"
            f"weight min/median/max {self.weight_min:.1f} / {self.weight_median:.1f} / "
            f"{self.weight_max:.1f}; radius median/p90/max {self.radius_median:.0f} / "
            f"{self.radius_p90:.0f} / {self.radius_max:.0f}\nstatus: {counts}"
        )


@dataclass(frozen=True)
class RefineResult:
    """Outcome of :func:`refine_partition`.

    Attributes
    ----------
    labels : ndarray of shape (n_units,)
        Refined cluster code per unit, ``0 .. n_clusters - 1``. Codes are
        ordered by parent, then by the first unit of each cluster.
    parent : ndarray of shape (n_clusters,)
        For each refined cluster, the input label (as given) contributing
        most of its weight: keep the parent's ID for a cluster that is the only
        one with that parent, give children IDs to the others.
    unchanged : ndarray of bool, shape (n_clusters,)
        True when the cluster has exactly the units of its parent.
    status : ndarray of str, shape (n_clusters,)
        ``ok`` or why not (see the module doc for the precedence).
    weights : ndarray of shape (n_clusters,)
        Total weight per cluster.
    radii : ndarray of shape (n_clusters,)
        Minimum-enclosing-circle radius per cluster (unit of ``xy``).
    connected : ndarray of bool, shape (n_clusters,)
        True when the cluster is connected in the adjacency graph.
    summary : PartitionSummary
        Shares in range, connected, within the cap, ok.
    """

    labels: np.ndarray
    parent: np.ndarray
    unchanged: np.ndarray
    status: np.ndarray
    weights: np.ndarray
    radii: np.ndarray
    connected: np.ndarray
    summary: PartitionSummary = field(repr=False)

    @property
    def n_clusters(self) -> int:
        return int(self.parent.shape[0])

    @property
    def child_index(self) -> np.ndarray:
        """Per cluster: 0 when it is the only cluster of its parent, else 1, 2, ...

        For hierarchical IDs: a cluster with 0 keeps its parent's ID (e.g.
        ``CLUSTER_001``); the others get children (``CLUSTER_001_01``,
        ``CLUSTER_001_02``...), numbered in the order of ``labels`` codes.
        """
        _, inverse, counts = np.unique(self.parent, return_inverse=True, return_counts=True)
        inverse = inverse.reshape(-1)
        rank = np.zeros(self.parent.shape[0], dtype=np.int64)
        seen: dict[int, int] = {}
        for code, group in enumerate(inverse.tolist()):
            seen[group] = seen.get(group, 0) + 1
            rank[code] = seen[group]
        return np.where(counts[inverse] > 1, rank, 0)


# ---------------------------------------------------------------------------
# Shared helpers
# ---------------------------------------------------------------------------


def _index_arrays(indptr: np.ndarray, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """CSR arrays as int32 when they fit (else int64).

    ``scipy.sparse.csgraph`` works on int32 indices: int32 arrays pass
    scipy's validation without being scanned or copied, which matters when
    the graph's components are computed hundreds of times.
    """
    dtype = np.int32 if indices.size < 2**31 - 1 and indptr.size < 2**31 - 1 else np.int64
    return indptr.astype(dtype, copy=False), indices.astype(dtype, copy=False)


def _stable_order(codes: np.ndarray) -> np.ndarray:
    """``argsort(codes, kind="stable")`` of non-negative codes; a radix sort when they fit int16."""
    if codes.size and int(codes.max()) < np.iinfo(np.int16).max:
        codes = codes.astype(np.int16)  # numpy sorts 16-bit integers by radix: linear time
    return np.argsort(codes, kind="stable")


def cluster_connectivity(labels: np.ndarray, adjacency: sparse.spmatrix) -> np.ndarray:
    """True per cluster code when its units form one connected piece of the graph.

    Parameters
    ----------
    labels : ndarray of shape (n,)
        Codes ``0 .. n_clusters - 1``.
    adjacency : sparse matrix (n, n)
        Symmetric neighbour graph.
    """
    labels = np.asarray(labels, dtype=np.int64)
    n_clusters = int(labels.max()) + 1 if labels.size else 0
    graph = sparse.csr_matrix(adjacency)
    indptr, indices = _index_arrays(graph.indptr, graph.indices)
    count, component = components_within(indptr, indices, edge_rows(indptr), labels)
    return pieces_per_cluster(count, component, labels, n_clusters) == 1


def cluster_status(
    labels: np.ndarray,
    weights: np.ndarray,
    radii: np.ndarray | None,
    adjacency: sparse.spmatrix | None,
    *,
    min_weight: float | None = None,
    max_weight: float | None = None,
    max_radius: float | None = None,
) -> np.ndarray:
    """Status per cluster code (see the module doc for the precedence).

    Parameters
    ----------
    labels : ndarray of shape (n,)
        Codes ``0 .. n_clusters - 1``.
    weights : ndarray of shape (n,)
        Unit weights.
    radii : ndarray of shape (n_clusters,), optional
        Radius per cluster; needed only with ``max_radius``.
    adjacency : sparse matrix (n, n), optional
        Neighbour graph, to tell islands from other light clusters; without it
        no cluster is called an island.
    min_weight, max_weight, max_radius : float, optional
        Constraints; None = not checked.
    """
    labels = np.asarray(labels, dtype=np.int64)
    weights = np.asarray(weights, dtype=float)
    n_clusters = int(labels.max()) + 1 if labels.size else 0
    cluster_weight = np.bincount(labels, weights, minlength=n_clusters)
    cluster_size = np.bincount(labels, minlength=n_clusters)
    low = -np.inf if min_weight is None else min_weight
    high = np.inf if max_weight is None else max_weight
    single_heavy = (cluster_size == 1) & (cluster_weight > high)
    status = np.full(n_clusters, STATUS_OK, dtype=object)
    if max_radius is not None and radii is not None:
        status[np.asarray(radii) > max_radius] = STATUS_RADIUS_OVER_MAX
    status[cluster_weight < low] = STATUS_UNDER_MIN
    status[cluster_weight > high] = STATUS_OVER_MAX
    if adjacency is not None and np.any(cluster_weight < low):
        graph = sparse.csr_matrix(adjacency)
        rows = edge_rows(graph.indptr)
        a, b = labels[rows], labels[graph.indices]
        # Neighbouring clusters that could absorb it (not lone heavy units).
        useful = (a != b) & ~single_heavy[b]
        has_neighbour = np.bincount(a[useful], minlength=n_clusters) > 0
        status[(cluster_weight < low) & ~has_neighbour] = STATUS_ISLAND_UNDER_MIN
    status[single_heavy] = STATUS_SINGLE_UNIT_OVER_MAX
    return status


def summarize_partition(
    labels: np.ndarray,
    weights: np.ndarray,
    xy: np.ndarray | None = None,
    adjacency: sparse.spmatrix | None = None,
    *,
    min_weight: float | None = None,
    max_weight: float | None = None,
    max_radius: float | None = None,
    radii: np.ndarray | None = None,
    status: np.ndarray | None = None,
    connected: np.ndarray | None = None,
) -> PartitionSummary:
    """Shares of clusters in the weight range, connected, within the radius cap, ok.

    Parameters
    ----------
    labels : ndarray of shape (n,)
        Any integer labels (re-coded internally).
    weights : ndarray of shape (n,)
        Unit weights.
    xy : ndarray of shape (n, 2), optional
        Metric coordinates, for radii (or pass ``radii`` per code).
    adjacency : sparse matrix (n, n), optional
        Neighbour graph, for connectivity (without it, connectivity counts as 1).
    min_weight, max_weight, max_radius : float, optional
        Constraints; None = not checked.
    radii, status, connected : ndarray, optional
        Precomputed per cluster code (skips recomputing).
    """
    _, codes = np.unique(np.asarray(labels), return_inverse=True)
    codes = codes.reshape(-1).astype(np.int64)
    weights = np.asarray(weights, dtype=float)
    n_clusters = int(codes.max()) + 1 if codes.size else 0
    cluster_weight = np.bincount(codes, weights, minlength=n_clusters)
    if radii is None and xy is not None:
        radii = cluster_radii(np.asarray(xy, dtype=float), codes, n_clusters)
    if status is None:
        status = cluster_status(
            codes,
            weights,
            radii,
            adjacency,
            min_weight=min_weight,
            max_weight=max_weight,
            max_radius=max_radius,
        )
    low = -np.inf if min_weight is None else min_weight
    high = np.inf if max_weight is None else max_weight
    in_range = (cluster_weight >= low) & (cluster_weight <= high)
    if connected is None:
        connected = (
            cluster_connectivity(codes, adjacency)
            if adjacency is not None
            else np.ones(n_clusters, dtype=bool)
        )
    if max_radius is not None and radii is not None:
        within = np.asarray(radii) <= max_radius
    else:
        within = np.ones(n_clusters, dtype=bool)
    values, counts = np.unique(np.asarray(status, dtype=str), return_counts=True)

    def share(mask: np.ndarray) -> float:
        return float(mask.mean()) if n_clusters else 1.0

    def pct(values_: np.ndarray | None, q: float) -> float:
        if values_ is None or n_clusters == 0:
            return math.nan
        return float(np.percentile(values_, q))

    return PartitionSummary(
        n_clusters=n_clusters,
        share_in_range=share(in_range),
        share_connected=share(connected),
        share_within_radius=share(within),
        share_ok=share(np.asarray(status) == STATUS_OK),
        status_counts={str(v): int(c) for v, c in zip(values, counts)},
        weight_min=pct(cluster_weight, 0),
        weight_median=pct(cluster_weight, 50),
        weight_max=pct(cluster_weight, 100),
        radius_median=pct(radii, 50),
        radius_p90=pct(radii, 90),
        radius_max=pct(radii, 100),
    )


# ---------------------------------------------------------------------------
# The refiner
# ---------------------------------------------------------------------------


class PartitionRefiner:
    """Repair a partition so that clusters are connected, in range and compact.

    Parameters
    ----------
    target_weight : float
        Preferred cluster weight (> 0); new parts are cut near it.
    min_weight : float, optional
        Lightest acceptable cluster (default: no minimum; disconnected
        fragments lighter than half the target are still reattached).
    max_weight : float, optional
        Heaviest acceptable cluster (default: no maximum).
    max_radius : float, optional
        Largest acceptable minimum-enclosing-circle radius, unit of ``xy``
        (metres). Default: no cap.
    contiguity : bool
        Require every cluster to be connected in the adjacency graph (hard).
        When False, the graph only says which clusters may exchange units.
    random_state : int
        Accepted for API symmetry; the refinement uses no randomness.

    Examples
    --------
    >>> refiner = PartitionRefiner(240, min_weight=180, max_weight=300, max_radius=3000)
    >>> result = refiner.fit(labels, xy_metric, weights, adjacency.matrix)  # doctest: +SKIP
    """

    def __init__(
        self,
        target_weight: float,
        min_weight: float | None = None,
        max_weight: float | None = None,
        max_radius: float | None = None,
        contiguity: bool = True,
        random_state: int = 0,
    ) -> None:
        self.target_weight = target_weight
        self.min_weight = min_weight
        self.max_weight = max_weight
        self.max_radius = max_radius
        self.contiguity = contiguity
        self.random_state = random_state

    def _validate_params(self) -> None:
        def positive(name: str, value: object, allow_none: bool) -> None:
            if value is None and allow_none:
                return
            if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
                raise ClusteringInputError(
                    f"{name} must be a number, got {value!r}; give a positive number."
                )
            if not (math.isfinite(float(value)) and float(value) > 0):
                raise ClusteringInputError(
                    f"{name} must be a positive finite number, got {value!r}; give a value > 0."
                )

        positive("target_weight", self.target_weight, False)
        positive("min_weight", self.min_weight, True)
        positive("max_weight", self.max_weight, True)
        positive("max_radius", self.max_radius, True)
        target = float(self.target_weight)
        if self.min_weight is not None and self.min_weight > target:
            raise ClusteringInputError(
                f"min_weight ({self.min_weight}) is above target_weight ({target}); lower the "
                "minimum or raise the target."
            )
        if self.max_weight is not None and self.max_weight < target:
            raise ClusteringInputError(
                f"max_weight ({self.max_weight}) is below target_weight ({target}); raise the "
                "maximum or lower the target."
            )

    def fit(
        self,
        labels: np.ndarray,
        xy: np.ndarray,
        weights: np.ndarray,
        adjacency: sparse.spmatrix | None = None,
        is_cancelled: Callable[[], bool] | None = None,
    ) -> RefineResult:
        """Refine ``labels``; see :func:`refine_partition` for the parameters."""
        self._validate_params()
        labels, xy, weights, graph = _validate_inputs(labels, xy, weights, adjacency)
        if graph is None:
            if self.contiguity:
                raise ClusteringInputError(
                    "contiguity=True needs the adjacency graph of the units; build it with "
                    "build_adjacency(...) and pass its matrix, or set contiguity=False."
                )
            from .adjacency import distance_adjacency

            graph = distance_adjacency(xy, math.inf).matrix
        work = _Refinement(
            labels,
            xy,
            weights,
            graph,
            target=float(self.target_weight),
            low=None if self.min_weight is None else float(self.min_weight),
            high=None if self.max_weight is None else float(self.max_weight),
            cap=None if self.max_radius is None else float(self.max_radius),
            contiguity=bool(self.contiguity),
            is_cancelled=is_cancelled,
        )
        return work.run()


def refine_partition(
    labels: np.ndarray,
    xy: np.ndarray,
    weights: np.ndarray,
    adjacency: sparse.spmatrix | None,
    *,
    target_weight: float,
    min_weight: float | None = None,
    max_weight: float | None = None,
    max_radius: float | None = None,
    contiguity: bool = True,
    random_state: int = 0,
    is_cancelled: Callable[[], bool] | None = None,
) -> RefineResult:
    """Repair a partition into connected clusters with weight in range and capped radius.

    Parameters
    ----------
    labels : ndarray of shape (n,)
        Input cluster per unit (any integers, e.g. k-means labels).
    xy : ndarray of shape (n, 2)
        Metric coordinates (metres) for radii and cut directions.
    weights : ndarray of shape (n,)
        Non-negative unit weights (population).
    adjacency : sparse matrix (n, n) or None
        Symmetric neighbour graph (``build_adjacency(...).matrix``); may be
        None only with ``contiguity=False`` (then all Delaunay edges are used).
    target_weight, min_weight, max_weight, max_radius, contiguity, random_state
        See :class:`PartitionRefiner`.
    is_cancelled : callable, optional
        Polled between steps; when it returns True, :class:`ClusteringCancelled`
        is raised.

    Returns
    -------
    RefineResult
    """
    refiner = PartitionRefiner(
        target_weight,
        min_weight=min_weight,
        max_weight=max_weight,
        max_radius=max_radius,
        contiguity=contiguity,
        random_state=random_state,
    )
    return refiner.fit(labels, xy, weights, adjacency, is_cancelled=is_cancelled)


def _validate_inputs(
    labels: np.ndarray, xy: np.ndarray, weights: np.ndarray, adjacency: sparse.spmatrix | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, sparse.csr_matrix | None]:
    xy = np.asarray(xy, dtype=float)
    if xy.ndim != 2 or xy.shape[1] != 2:
        raise ClusteringInputError(
            f"xy must have shape (n, 2), got {xy.shape}; pass metric x, y per unit."
        )
    n = xy.shape[0]
    if n == 0:
        raise ClusteringInputError("There are no units to refine; pass at least one unit.")
    if not np.all(np.isfinite(xy)):
        raise ClusteringInputError(
            "xy contains NaN or infinite coordinates; drop or repair those units first."
        )
    labels = np.asarray(labels)
    if labels.shape != (n,):
        raise ClusteringInputError(
            f"labels has shape {labels.shape} but there are {n} units; pass one label per unit."
        )
    if not np.issubdtype(labels.dtype, np.integer):
        raise ClusteringInputError(
            f"labels must be integers, got dtype {labels.dtype}; pass integer cluster codes."
        )
    weights = np.asarray(weights, dtype=float)
    if weights.shape != (n,):
        raise ClusteringInputError(
            f"weights has shape {weights.shape} but there are {n} units; pass one weight per unit."
        )
    if not np.all(np.isfinite(weights)) or np.any(weights < 0):
        raise ClusteringInputError(
            "weights must be finite and non-negative; replace missing or negative weights "
            "(e.g. by 0) first."
        )
    graph = None
    if adjacency is not None:
        if not sparse.issparse(adjacency) or adjacency.shape != (n, n):
            raise ClusteringInputError(
                f"adjacency must be a sparse ({n}, {n}) matrix, got "
                f"{getattr(adjacency, 'shape', type(adjacency))}; use build_adjacency(...).matrix."
            )
        graph = _clean_symmetric(adjacency)
        if graph is not None:
            return labels, xy, weights, graph
        coo = sparse.coo_matrix(adjacency)
        off_diagonal = (coo.row != coo.col) & (coo.data != 0)
        first, second = coo.row[off_diagonal], coo.col[off_diagonal]
        # Symmetrise: an edge stored one way still links both units.
        graph = sparse.csr_matrix(
            (
                np.ones(2 * first.size, dtype=np.int8),
                (np.concatenate([first, second]), np.concatenate([second, first])),
            ),
            shape=(n, n),
        )
        graph.sum_duplicates()
        graph.sort_indices()
    return labels, xy, weights, graph


def _clean_symmetric(adjacency: sparse.spmatrix) -> sparse.csr_matrix | None:
    """The graph as 0/1 CSR when it already is symmetric, loop-free and canonical; else None.

    A graph from :func:`~.adjacency.build_adjacency` always is: checking
    that is cheaper than symmetrising it again.
    """
    if getattr(adjacency, "format", None) != "csr" or not adjacency.has_canonical_format:
        return None
    if adjacency.nnz and not np.all(adjacency.data != 0):
        return None
    rows = edge_rows(adjacency.indptr)
    if np.any(rows == adjacency.indices):
        return None
    transpose = adjacency.T.tocsr()
    transpose.sort_indices()
    if not (
        np.array_equal(transpose.indptr, adjacency.indptr)
        and np.array_equal(transpose.indices, adjacency.indices)
    ):
        return None
    return sparse.csr_matrix(
        (np.ones(adjacency.nnz, dtype=np.int8), adjacency.indices.copy(), adjacency.indptr.copy()),
        shape=adjacency.shape,
    )


class _Refinement:
    """State of one refinement run (internal; see the module doc for the steps)."""

    def __init__(
        self,
        labels: np.ndarray,
        xy: np.ndarray,
        weights: np.ndarray,
        graph: sparse.csr_matrix,
        *,
        target: float,
        low: float | None,
        high: float | None,
        cap: float | None,
        contiguity: bool,
        is_cancelled: Callable[[], bool] | None,
    ) -> None:
        self.input_values, codes = np.unique(labels, return_inverse=True)
        self.input_codes = codes.reshape(-1).astype(np.int64)
        self.xy = xy
        self.weights = weights
        self.n = xy.shape[0]
        self.graph = graph
        self.indptr, self.indices = _index_arrays(graph.indptr, graph.indices)
        self.rows = edge_rows(self.indptr)
        self.target = target
        self.low = low
        self.high = high
        self.cap = cap
        self.contiguity = contiguity
        self.is_cancelled = is_cancelled
        # Below this a group must merge. Without a minimum only fragments cut
        # off from their cluster are held to it (see group_pieces).
        self.merge_below = low if low is not None else 0.5 * target
        self.lo = 0.0 if low is None else low
        self.hi = math.inf if high is None else high
        self.span = (self.hi - self.lo) if self.hi < math.inf else self.target
        self._local = np.full(self.n, -1, dtype=self.indices.dtype)
        self._padded = self._padded_indptr = None
        degree = np.diff(self.indptr)
        max_degree = int(degree.max()) if self.n else 0
        if 0 < max_degree * self.n <= _PADDED_SLACK * self.indices.size:
            # Nearly regular (a lattice): neighbours as an (n, max_degree)
            # table, short rows padded with self-loops, so that induced
            # subgraphs are one gather (see subgraph).
            dtype = self.indices.dtype
            table = np.empty((self.n, max_degree), dtype=dtype)
            table[:] = np.arange(self.n, dtype=dtype)[:, None]
            # Row-major order of the filled slots is the CSR order.
            table[np.arange(max_degree)[None, :] < degree[:, None]] = self.indices
            self._padded = table
            self._padded_indptr = np.arange(0, max_degree * self.n + 1, max_degree, dtype=dtype)
        # Tiny tie-break so that zero-weight pieces still compare.
        self.eps = 1e-9 * max(float(weights.sum()), 1.0) / max(self.n, 1)

    # -- small utilities ----------------------------------------------------

    def check_cancelled(self) -> None:
        if self.is_cancelled is not None and self.is_cancelled():
            raise ClusteringCancelled("Refinement cancelled by the caller.")

    def feasible_counts(self, weight: float) -> tuple[int, int]:
        """Smallest and largest valid number of parts (smallest > largest when none)."""
        smallest = max(1, math.ceil(weight / self.hi - 1e-9)) if self.hi < math.inf else 1
        if self.lo > 0:
            largest = math.floor(weight / self.lo + 1e-9)
        else:  # no minimum: never cut finer than a quarter of the target
            largest = max(1, math.floor(4 * weight / self.target))
        return smallest, largest

    def is_feasible(self, weight: float) -> bool:
        if weight < self.merge_below:
            return False
        smallest, largest = self.feasible_counts(weight)
        return smallest <= largest

    def choose_count(self, weight: float, radius: float) -> int:
        """Number of parts for a group: nearest the target, more when it is wide."""
        smallest, largest = self.feasible_counts(weight)
        if smallest > largest:
            return 1
        wanted = round(weight / self.target)
        if self.cap is not None and radius > 0:
            wanted = max(wanted, math.ceil((_RADIUS_SPLIT_FACTOR * radius / self.cap) ** 2))
            # Leave parts a little above the minimum: fragments move when
            # connectivity is restored.
            if self.lo > 0:
                roomy = math.floor(weight / (self.lo + _PART_MARGIN * self.span))
                largest = max(smallest, min(largest, roomy))
        return int(min(max(wanted, smallest), largest))

    def weight_excess(self, weight: np.ndarray) -> np.ndarray:
        """How far each weight lies outside [min, max] (0 inside)."""
        return np.maximum(self.lo - weight, 0.0) + np.maximum(weight - self.hi, 0.0)

    def radius_excess(self, radius: np.ndarray) -> np.ndarray:
        """How far each radius lies above the cap (0 without a cap)."""
        if self.cap is None:
            return np.zeros_like(radius)
        return np.maximum(radius - self.cap, 0.0)

    def score(self, weight: np.ndarray, radius: np.ndarray) -> tuple[float, float, float]:
        """Lexicographic badness of a set of clusters: weight first, then radius."""
        return (
            float(self.weight_excess(weight).sum()),
            float(self.radius_excess(radius).sum()),
            float(radius.max()) if radius.size else 0.0,
        )

    def subgraph(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, int]:
        """CSR (indptr, indices, edge rows, degree) of the graph induced by units ``idx``.

        On a lattice every row is padded with self-loops to the same length
        ``degree`` and the edge rows are None (implied: edge ``e`` leaves row
        ``e // degree``); otherwise ``degree`` is 0.

        An edge leaving ``idx`` is kept as a self-loop rather than dropped
        (no row pointers to recount): self-loops join nothing, so components
        and shared-edge counts are those of the induced graph.
        """
        local = self._local
        size = idx.shape[0]
        dtype = self.indptr.dtype
        local[idx] = np.arange(size, dtype=dtype)
        if self._padded is not None:
            # Every row padded with self-loops to the same degree: one gather.
            degree = self._padded.shape[1]
            neighbours = local.take(self._padded.take(idx, axis=0)).ravel()
            outside = np.flatnonzero(neighbours < 0)
            neighbours[outside] = outside // degree
            local[idx] = -1
            return self._padded_indptr[: size + 1], neighbours, None, degree
        offsets, counts = edge_offsets(self.indptr, idx)
        sub_indptr = np.zeros(size + 1, dtype=dtype)
        np.cumsum(counts, out=sub_indptr[1:])
        neighbours = local.take(self.indices.take(offsets))
        rows = np.repeat(np.arange(size, dtype=dtype), counts)
        neighbours = np.where(neighbours >= 0, neighbours, rows)
        local[idx] = -1
        return sub_indptr, neighbours, rows, 0

    def components(self, labels: np.ndarray) -> tuple[int, np.ndarray]:
        """Connected pieces of every label on the whole graph: (count, piece per unit)."""
        if self._padded is not None:
            return components_within(
                self._padded_indptr, self._padded.ravel(), None, labels, self._padded.shape[1]
            )
        return components_within(self.indptr, self.indices, self.rows, labels)

    def radii_of(self, parts: list[np.ndarray]) -> np.ndarray:
        """Exact radius of each part (one vectorised call)."""
        idx = np.concatenate(parts)
        codes = np.repeat(np.arange(len(parts)), [p.shape[0] for p in parts])
        return cluster_radii(self.xy[idx], codes, len(parts))

    # -- bisection -----------------------------------------------------------

    def cut_plan(self, idx: np.ndarray, parts_a: int, parts_b: int) -> _CutPlan:
        """Straight-cut proposals for :meth:`bisect`, best first."""
        w = self.weights[idx]
        total = float(w.sum())
        parts = parts_a + parts_b
        target_a = total * parts_a / parts
        per_part = max(total / parts, self.eps)

        def window(margin: bool) -> tuple[float, float]:
            def side(k: int) -> tuple[float, float]:
                lo_avg, hi_avg = self.lo, self.hi
                if margin and k > 1:  # a side cut again needs room for its own cut
                    lo_avg += _INNER_MARGIN * self.span
                    hi_avg -= _INNER_MARGIN * self.span
                return k * lo_avg, k * hi_avg

            a_lo, a_hi = side(parts_a)
            b_lo, b_hi = side(parts_b)
            return max(a_lo, total - b_hi), min(a_hi, total - b_lo)

        hard_lo, hard_hi = window(False)
        soft_lo, soft_hi = window(True)
        if soft_lo > soft_hi:
            soft_lo, soft_hi = hard_lo, hard_hi
        if hard_lo > hard_hi:  # no feasible split: aim at the proportional weight
            hard_lo = hard_hi = soft_lo = soft_hi = target_a

        points = self.xy[idx]
        centred = points - points.mean(axis=0)
        x, y = centred[:, 0], centred[:, 1]
        # Principal axis from the 2 x 2 covariance, without BLAS calls (threaded
        # BLAS only competes for the cores on such thin products).
        sxx, syy, sxy = float((x * x).sum()), float((y * y).sum()), float((x * y).sum())
        base_angle = 0.5 * math.atan2(2.0 * sxy, sxx - syy)
        proposals = []
        scale = None
        for angle in (base_angle, *(base_angle + a for a in _EXTRA_ANGLES)):
            cos, sin = math.cos(angle), math.sin(angle)
            along = x * cos + y * sin
            across = y * cos - x * sin
            order = np.argsort(along, kind="stable")
            a_sorted = along[order]
            c_sorted = across[order]
            if scale is None:
                scale = max(
                    0.5 * math.hypot(np.ptp(a_sorted), np.ptp(c_sorted)) / math.sqrt(parts), 1e-12
                )
            cum = np.cumsum(w[order])[:-1]  # side A = first i + 1 units
            key, cut = _straight_cut(
                a_sorted,
                c_sorted,
                cum,
                (soft_lo, soft_hi),
                math.sqrt(parts_a),
                math.sqrt(parts_b),
                target_a,
                _BALANCE_WEIGHT * scale,
                per_part,
            )
            proposals.append((key, order[: cut + 1]))
        proposals.sort(key=lambda item: item[0])
        return _CutPlan(
            w, target_a, (soft_lo, soft_hi), (hard_lo, hard_hi), [side for _, side in proposals]
        )

    def bisect(
        self, idx: np.ndarray, parts_a: int, parts_b: int, connect: bool, n_candidates: int = 1
    ) -> list[np.ndarray]:
        """Cut units ``idx`` in two sides meant for ``parts_a`` and ``parts_b`` parts.

        Candidate cuts are straight lines across four directions (principal
        axis, perpendicular, diagonals); per direction the cut is chosen among
        those leaving both sides a feasible weight, by bounding-box radius and
        balance. With ``connect`` both sides are then made connected. Returns
        up to ``n_candidates`` masks (True = side A), best first.
        """
        plan = self.cut_plan(idx, parts_a, parts_b)
        w = plan.weights
        soft_lo, soft_hi = plan.soft
        hard_lo, hard_hi = plan.hard
        graph = self.subgraph(idx) if connect and self.contiguity else None
        accepted: list[np.ndarray] = []
        fallback, fallback_miss = None, math.inf
        for side_a in plan.sides:
            mask = np.zeros(idx.shape[0], dtype=bool)
            mask[side_a] = True
            if graph is not None:
                mask = _make_sides_connected(*graph, mask, w, self.eps)
            if mask.all() or not mask.any():
                continue
            weight_a = float(w[mask].sum())
            if soft_lo <= weight_a <= soft_hi:
                accepted.append(mask)
                if len(accepted) >= n_candidates:
                    break
                continue
            miss = max(hard_lo - weight_a, weight_a - hard_hi, 0.0)
            miss += 1e-6 * abs(weight_a - plan.target_a)
            if miss < fallback_miss:
                fallback, fallback_miss = mask, miss
        if accepted:
            return accepted
        if fallback is not None:
            return [fallback]
        return []

    def split(self, idx: np.ndarray, parts: int, connect: bool = True) -> list[np.ndarray]:
        """Recursive bisection of units ``idx`` into ``parts`` parts (connected if ``connect``)."""
        if parts <= 1 or idx.shape[0] <= 1:
            return [idx]
        parts_a = parts // 2
        parts_b = parts - parts_a
        masks = self.bisect(idx, parts_a, parts_b, connect)
        if not masks:
            return [idx]
        mask = masks[0]
        return self.split(idx[mask], parts_a, connect) + self.split(idx[~mask], parts_b, connect)

    def split_power(self, idx: np.ndarray, parts: int) -> list[np.ndarray]:
        """Compact parts of equal weight: a centroidal power diagram.

        Starting from the centroids of a (cheap, unconnected) recursive
        bisection, alternate: assign each unit to the centre minimising
        squared distance minus the centre's power; raise the power of light
        parts and lower that of heavy ones; move centres to the centroid of
        their units (in the first ``_POWER_CENTRE_MOVES`` rounds; then the
        centres stay and the powers alone balance the weights). With at
        least ``_COARSE_MIN_UNITS`` units per part those rounds run on every
        ``_COARSE_STRIDE``-th unit (weights scaled to the same total), and
        at most ``_FINE_ITERATIONS`` rounds then balance the powers on all
        units with the centres fixed. Power cells are convex, hence compact;
        stray fragments are then given to a neighbouring part. When the
        parts then miss the weight range by more than ``_FALLBACK_MISS``
        parts' weight in all, the connected recursive bisection is used
        instead if it misses less. Many parts are first bisected (connected)
        into blocks of at most ``_POWER_MAX_PARTS`` parts, which keeps the
        cost linear.
        """
        if parts <= 1 or idx.shape[0] <= parts:
            return [idx]
        if parts > _POWER_MAX_PARTS:
            parts_a = parts // 2
            masks = self.bisect(idx, parts_a, parts - parts_a, connect=True)
            if masks:
                return self.split_power(idx[masks[0]], parts_a) + self.split_power(
                    idx[~masks[0]], parts - parts_a
                )
        points = self.xy[idx] - self.xy[idx].mean(axis=0)
        w = self.weights[idx]
        start = self.split(idx, parts, connect=False)
        centres = np.array([self.xy[p].mean(axis=0) for p in start]) - self.xy[idx].mean(axis=0)
        parts = centres.shape[0]
        goal = float(w.sum()) / parts
        extent = float(np.ptp(points[:, 0]) ** 2 + np.ptp(points[:, 1]) ** 2)
        balance = _PowerBalance(parts, goal, 0.05 * extent / parts, self.eps)
        stride = _COARSE_STRIDE if idx.shape[0] >= parts * _COARSE_MIN_UNITS else 1
        if stride > 1:
            # Centres settle on every stride-th unit (weights scaled to the
            # same total); then the powers are balanced on all units.
            sample = np.arange(0, idx.shape[0], stride)
            w_sample = w[sample]
            w_sample = w_sample * (float(w.sum()) / max(float(w_sample.sum()), self.eps))
            balance.run(
                _PowerAssigner(points[sample], parts),
                points[sample],
                w_sample,
                centres,
                _POWER_ITERATIONS,
                _POWER_CENTRE_MOVES,
            )
            balance.restart()
            best_assign = balance.run(
                _PowerAssigner(points, parts), points, w, centres, _FINE_ITERATIONS, 0
            )
        else:
            best_assign = balance.run(
                _PowerAssigner(points, parts),
                points,
                w,
                centres,
                _POWER_ITERATIONS,
                _POWER_CENTRE_MOVES,
            )
        assign = best_assign
        if self.contiguity:
            assign = reattach_fragments(*self.subgraph(idx), assign, w, self.eps)
        result = [idx[assign == j] for j in range(parts) if np.any(assign == j)]
        weights = np.array([self.weights[p].sum() for p in result])
        if np.all((weights >= self.lo) & (weights <= self.hi)):
            return result
        miss = self.weight_excess(weights).sum()
        if miss <= _FALLBACK_MISS * goal:
            return result  # a few units astray: the local search moves them
        fallback = self.split(idx, parts)
        fallback_weights = np.array([self.weights[p].sum() for p in fallback])
        fallback_miss = self.weight_excess(fallback_weights).sum()
        return fallback if fallback_miss < miss else result

    # -- step 1 and 2: pieces and groups -----------------------------------------

    def pieces(self) -> tuple[np.ndarray, np.ndarray]:
        """Connected pieces of input clusters, heavy units alone. Returns (piece, heavy)."""
        heavy = self.weights > self.hi
        key = self.input_codes.copy()
        heavy_index = np.flatnonzero(heavy)
        key[heavy_index] = int(key.max()) + 1 + np.arange(heavy_index.size)
        if self.contiguity:
            _, piece = self.components(key)
        else:
            _, piece = np.unique(key, return_inverse=True)
        return piece.reshape(-1).astype(np.int64), heavy

    def group_pieces(self, piece: np.ndarray, heavy: np.ndarray) -> np.ndarray:
        """Merge pieces that cannot stand alone with neighbours; the group of every piece.

        Light pieces (sparse areas) first pool with every adjacent light
        piece, so that a whole sparse area is re-cut into compact parts rather
        than keeping elongated unions of two or three light pieces. Then,
        lightest first, a group whose weight admits no valid number of parts
        merges with the adjacent group with the nearest centroid, preferring
        groups that must merge too and unions that become feasible.
        """
        n_pieces = int(piece.max()) + 1
        piece_weight = np.bincount(piece, self.weights, minlength=n_pieces)
        heavy_piece = np.zeros(n_pieces, dtype=bool)
        heavy_piece[piece[heavy]] = True
        a, b = piece[self.rows], piece[self.indices]
        keep = (a != b) & ~heavy_piece[a] & ~heavy_piece[b]  # heavy units never merge
        a, b = a[keep], b[keep]
        light_piece = ~heavy_piece & (piece_weight < self.merge_below)
        # The heaviest piece of each input cluster is its "main" piece; the
        # others are fragments cut off from it. Without a minimum weight only
        # fragments must find a home: a whole, connected cluster stands alone.
        main_piece = np.zeros(n_pieces, dtype=bool)
        piece_cluster = np.zeros(n_pieces, dtype=np.int64)
        piece_cluster[piece] = self.input_codes
        by_weight = np.lexsort((np.arange(n_pieces), -piece_weight, piece_cluster))
        first = np.ones(n_pieces, dtype=bool)
        first[1:] = piece_cluster[by_weight[1:]] != piece_cluster[by_weight[:-1]]
        main_piece[by_weight[first]] = True
        if self.low is None:
            light_piece &= ~main_piece
        if _POOL_LIGHT_PIECES:
            both_light = light_piece[a] & light_piece[b]
            pool_graph = sparse.csr_matrix(
                (np.ones(int(both_light.sum())), (a[both_light], b[both_light])),
                shape=(n_pieces, n_pieces),
            )
            _, start = connected_components(pool_graph, directed=True, connection="weak")
        else:
            start = np.arange(n_pieces)
        _, start = np.unique(start, return_inverse=True)
        start = start.reshape(-1).astype(np.int64)
        n_groups = int(start.max()) + 1
        group = start[piece]
        weight = np.bincount(group, self.weights, minlength=n_groups)
        count = np.bincount(group, minlength=n_groups).astype(float)
        sum_x = np.bincount(group, self.xy[:, 0], minlength=n_groups)
        sum_y = np.bincount(group, self.xy[:, 1], minlength=n_groups)
        heavy_group = np.zeros(n_groups, dtype=bool)
        heavy_group[start[heavy_piece]] = True
        main_group = np.zeros(n_groups, dtype=bool)
        main_group[start[main_piece]] = True
        pair_keys = np.unique(start[a] * n_groups + start[b])
        neighbours: list[set[int]] = [set() for _ in range(n_groups)]
        for first, second in zip((pair_keys // n_groups).tolist(), (pair_keys % n_groups).tolist()):
            if first != second:
                neighbours[first].add(second)

        root_of = np.arange(n_groups)
        size = np.ones(n_groups, dtype=np.int64)

        def find(g: int) -> int:
            root = g
            while root_of[root] != root:
                root = root_of[root]
            while root_of[g] != root:
                root_of[g], g = root, root_of[g]
            return root

        def needs_merge(g: int) -> bool:
            if heavy_group[g] or (self.low is None and main_group[g]):
                return False
            return not self.is_feasible(weight[g])

        heap = [(weight[g] + self.eps * g, g) for g in range(n_groups) if needs_merge(g)]
        heapq.heapify(heap)
        while heap:
            key, g = heapq.heappop(heap)
            if find(g) != g or key != weight[g] + self.eps * g or not needs_merge(g):
                continue  # stale entry
            candidates = sorted(neighbours[g])
            if not candidates:
                continue  # an island: nothing to merge with
            gx, gy = sum_x[g] / count[g], sum_y[g] / count[g]
            best, best_cost = -1, math.inf
            for h in candidates:
                cost = math.hypot(sum_x[h] / count[h] - gx, sum_y[h] / count[h] - gy) + 1e-9
                if not needs_merge(h):
                    cost *= 1.5
                if not self.is_feasible(weight[g] + weight[h]):
                    cost *= 1.25
                if cost < best_cost:
                    best, best_cost = h, cost
            root, other = (g, best) if size[g] >= size[best] else (best, g)
            root_of[other] = root
            size[root] += size[other]
            for array in (weight, count, sum_x, sum_y):
                array[root] += array[other]
            main_group[root] |= main_group[other]
            for h in neighbours[other]:
                neighbours[h].discard(other)
                if h != root:
                    neighbours[h].add(root)
                    neighbours[root].add(h)
            neighbours[root].discard(other)
            neighbours[other] = set()
            if needs_merge(root):
                heapq.heappush(heap, (weight[root] + self.eps * root, root))
        final = np.array([find(g) for g in range(n_groups)], dtype=np.int64)
        return final[start]

    # -- the run --------------------------------------------------------------

    def run(self) -> RefineResult:
        self.check_cancelled()
        piece, heavy = self.pieces()
        group = self.group_pieces(piece, heavy)[piece]
        self.check_cancelled()
        _, group = np.unique(group, return_inverse=True)
        group = group.reshape(-1).astype(np.int64)
        n_groups = int(group.max()) + 1
        group_weight = np.bincount(group, self.weights, minlength=n_groups)
        radii = cluster_radii(self.xy, group, n_groups)
        order = _stable_order(group)
        bounds = np.searchsorted(group[order], np.arange(n_groups + 1))
        labels = np.empty(self.n, dtype=np.int64)
        n_labels = 0
        # Radius per label, known for groups kept whole (NaN: to compute).
        label_radii = []
        for g in range(n_groups):
            idx = order[bounds[g] : bounds[g + 1]]
            parts_wanted = 1
            in_range = self.lo <= group_weight[g] <= self.hi
            if not (in_range and (self.cap is None or radii[g] <= self.cap)):
                parts_wanted = self.choose_count(group_weight[g], radii[g])
            parts = self.split_power(idx, parts_wanted) if parts_wanted > 1 else [idx]
            for part in parts:
                labels[part] = n_labels
                n_labels += 1
            label_radii.extend([radii[g]] if len(parts) == 1 else [math.nan] * len(parts))
            if parts_wanted > 1:
                self.check_cancelled()
        label_radii = np.array(label_radii, dtype=float)
        label_radii = self.updated_radii(label_radii, labels, n_labels, np.isnan(label_radii))
        labels, n_labels, label_radii = self.split_wide(labels, n_labels, label_radii)
        labels, label_radii = self.local_search(labels, n_labels, label_radii, radius=False)
        fewer_wide = self.fewer_wide(labels, label_radii)
        if fewer_wide is not None:
            labels, label_radii = fewer_wide
        elif self.cap is not None and np.any(label_radii > self.cap):
            # Step 6 found nothing to move (e.g. long thin clusters side by
            # side, which two neighbours re-cut across would fit): pair
            # re-cuts for the radius as well.
            labels, label_radii = self.local_search(
                labels, label_radii.size, label_radii, radius=True
            )
        return self.finish(labels, label_radii)

    def members(self, labels: np.ndarray, n_labels: int) -> tuple[np.ndarray, np.ndarray]:
        order = _stable_order(labels)
        return order, np.searchsorted(labels[order], np.arange(n_labels + 1))

    def split_wide(
        self, labels: np.ndarray, n_labels: int, radii: np.ndarray
    ) -> tuple[np.ndarray, int, np.ndarray]:
        """Split clusters wider than the cap that are heavy enough for two parts.

        ``radii`` (per label) is updated along.
        """
        if self.cap is None:
            return labels, n_labels, radii
        for _ in range(3):
            weight = np.bincount(labels, self.weights, minlength=n_labels)
            wide = [
                c
                for c in np.flatnonzero(radii > self.cap).tolist()
                if self.feasible_counts(weight[c])[1] >= 2
            ]
            if not wide:
                break
            order, bounds = self.members(labels, n_labels)
            for c in wide:
                idx = order[bounds[c] : bounds[c + 1]]
                parts = self.split_power(idx, max(2, self.choose_count(weight[c], radii[c])))
                for part in parts[1:]:
                    labels[part] = n_labels
                    n_labels += 1
            changed = np.zeros(radii.size, dtype=bool)
            changed[wide] = True
            radii = self.updated_radii(radii, labels, n_labels, changed)
            self.check_cancelled()
        return labels, n_labels, radii

    def local_search(
        self, labels: np.ndarray, n_labels: int, radii: np.ndarray, radius: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        """Re-cut each violating cluster together with neighbours while that helps.

        A cluster violates when its weight is out of range, or, with
        ``radius``, also when it is wider than the cap.
        For a violating cluster and each adjacent cluster (the
        narrowest first), the pair's union is re-cut into the numbers of parts
        its weight allows, along several candidate lines and as a power
        diagram. When no pair helps a cluster whose weight is out of range, a
        third cluster adjacent to the pair joins in (weight can then flow
        through a neighbour that has no spare weight itself). The best
        candidate replaces the clusters when :func:`_improves` says so.
        ``radii`` (per label on entry) is returned updated with the labels.
        """
        memory = _Attempts()
        last_misses = None
        touched = np.zeros(0, dtype=bool)  # clusters changed by the last pass
        for _ in range(_MAX_LOCAL_PASSES):
            weight = np.bincount(labels, self.weights, minlength=n_labels)
            size = np.bincount(labels, minlength=n_labels)
            # Only the clusters changed by the last pass get new radii.
            radii = self.updated_radii(radii, labels, n_labels, touched)
            touched = np.zeros(0, dtype=bool)
            weight_miss = self.weight_excess(weight)
            radius_miss = self.radius_excess(radii)
            # A cluster that only misses the radius cap is first left to
            # step 6, which moves area across many clusters at once: pair
            # re-cuts cost as much and lower the number over the cap less.
            violators = np.flatnonzero((weight_miss > 0) | (radius & (radius_miss > 0)))
            violators = violators[np.lexsort((-radius_miss[violators], -weight_miss[violators]))]
            if violators.size == 0:
                break
            misses = (violators.size, float(weight_miss.sum()), float(radius_miss.sum()))
            if last_misses is not None and not _pass_helped(last_misses, misses):
                break
            last_misses = misses
            lone_heavy = (size == 1) & (weight > self.hi)
            state = _LocalPass(self, labels, n_labels, weight, radii, lone_heavy, memory)
            touched = state.touched
            changed = False
            for c in violators.tolist():
                if state.touched[c] or lone_heavy[c]:
                    continue
                others = state.adjacent(c)
                others = others[np.argsort(radii[others], kind="stable")][:_LOCAL_NEIGHBOURS]
                candidates = []
                for d in others.tolist():
                    # Only a strictly better re-cut than the best so far can win.
                    scores = [item[0] for item in candidates if item is not None]
                    candidates.append(state.attempt([c, d], min(scores) if scores else None))
                if weight_miss[c] > 0 and not any(candidates):
                    # Take a third cluster: the one with most spare weight.
                    spare = weight - self.lo if weight[c] < self.lo else self.hi - weight
                    for d in others.tolist():
                        thirds = np.setdiff1d(np.union1d(state.adjacent(d), others), [c, d])
                        thirds = thirds[np.argsort(-spare[thirds], kind="stable")]
                        for e in thirds[:_LOCAL_THIRDS].tolist():
                            candidates.append(state.attempt([c, d, e]))
                found = [item for item in candidates if item is not None]
                if not found:
                    continue
                _, codes, parts = min(found, key=lambda item: item[0])
                for number, part in enumerate(parts):
                    if number < len(codes):
                        labels[part] = codes[number]
                    else:
                        labels[part] = n_labels
                        n_labels += 1
                state.touched[codes] = True
                for code in codes:
                    memory.version[code] = memory.version.get(code, 0) + 1
                # The same clusters re-cut again would offer the same cuts of
                # the same units, the kept one among them: nothing to gain.
                memory.failed.add(memory.key(list(codes)))
                changed = True
            self.check_cancelled()
            if not changed:
                break
        return labels, self.updated_radii(radii, labels, n_labels, touched)

    def fewer_wide(
        self, labels: np.ndarray, radii: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """Step 6: fewer clusters over the cap (:mod:`.radius_tail`), or None.

        ``radii`` (per code) is returned updated with the labels.
        """
        if self.cap is None:
            return None
        return fewer_over_cap(
            labels,
            radii,
            self.xy,
            self.weights,
            (self.indptr, self.indices),
            cap=self.cap,
            low=self.lo,
            high=self.hi,
            subgraph=self.subgraph if self.contiguity else None,
            eps=self.eps,
            check_cancelled=self.check_cancelled,
        )

    def updated_radii(
        self, radii: np.ndarray, labels: np.ndarray, n_labels: int, changed: np.ndarray
    ) -> np.ndarray:
        """Radii of ``n_labels`` clusters, recomputed for new and ``changed`` codes only.

        A cluster's radius depends on its own units only, so the others keep theirs.
        """
        stale = np.zeros(n_labels, dtype=bool)
        stale[: changed.size] = changed
        stale[radii.size :] = True
        updated = np.zeros(n_labels)
        updated[: radii.size] = radii
        codes = np.flatnonzero(stale)
        if codes.size:
            units = np.flatnonzero(stale[labels])
            local = np.full(n_labels, -1, dtype=np.int64)
            local[codes] = np.arange(codes.size)
            updated[codes] = cluster_radii(self.xy[units], local[labels[units]], codes.size)
        return updated

    def recuts(self, union: np.ndarray, weight: float, members: int) -> list[list[np.ndarray]]:
        """Candidate re-partitions of the units of ``members`` adjacent clusters."""
        smallest, largest = self.feasible_counts(weight)
        candidates: list[list[np.ndarray]] = []
        counts = {round(weight / self.target), members}
        if self.cap is not None:
            counts.add(members + 1)  # one more, narrower cluster
        for count in sorted(c for c in counts if smallest <= c <= largest):
            if count == 1:
                candidates.append([union])
            elif count == 2:
                for mask in self.bisect(union, 1, 1, connect=True, n_candidates=_LOCAL_CUTS):
                    candidates.append([union[mask], union[~mask]])
            else:
                candidates.append(self.split_power(union, count))
        return candidates

    def finish(self, labels: np.ndarray, radii: np.ndarray) -> RefineResult:
        """The result; ``radii`` holds the radius per label code (codes may be unused)."""
        # (first_unit: the first unit of each cluster, for the order below)
        codes, first_unit, labels = np.unique(labels, return_index=True, return_inverse=True)
        labels = labels.reshape(-1).astype(np.int64)
        radii = radii[codes]
        n_clusters = int(labels.max()) + 1
        # Parent = the input cluster giving most weight (then most units, lowest code).
        n_inputs = int(self.input_codes.max()) + 1
        pair_keys, inverse = np.unique(labels * n_inputs + self.input_codes, return_inverse=True)
        inverse = inverse.reshape(-1)
        pair_weight = np.bincount(inverse, self.weights)
        pair_count = np.bincount(inverse)
        pair_cluster = pair_keys // n_inputs
        pair_input = pair_keys % n_inputs
        ranking = np.lexsort((pair_input, -pair_count, -pair_weight, pair_cluster))
        first = np.searchsorted(pair_cluster[ranking], np.arange(n_clusters))
        parent_code = pair_input[ranking][first]
        # Order clusters by parent, then by their first unit.
        new_order = np.lexsort((first_unit, parent_code))
        relabel = np.empty(n_clusters, dtype=np.int64)
        relabel[new_order] = np.arange(n_clusters)
        labels = relabel[labels]
        parent_code = parent_code[new_order]
        cluster_size = np.bincount(labels, minlength=n_clusters)
        input_size = np.bincount(self.input_codes, minlength=n_inputs)
        from_parent = np.bincount(
            labels[self.input_codes == parent_code[labels]], minlength=n_clusters
        )
        unchanged = (from_parent == cluster_size) & (cluster_size == input_size[parent_code])
        weights = np.bincount(labels, self.weights, minlength=n_clusters)
        radii = radii[new_order]
        status = cluster_status(
            labels,
            self.weights,
            radii,
            self.graph,
            min_weight=self.low,
            max_weight=self.high,
            max_radius=self.cap,
        )
        connected = pieces_per_cluster(*self.components(labels), labels, n_clusters) == 1
        summary = summarize_partition(
            labels,
            self.weights,
            None,
            self.graph,
            min_weight=self.low,
            max_weight=self.high,
            max_radius=self.cap,
            radii=radii,
            status=status,
            connected=connected,
        )
        return RefineResult(
            labels=labels,
            parent=self.input_values[parent_code],
            unchanged=unchanged,
            status=status.astype(str),
            weights=weights,
            radii=radii,
            connected=connected,
            summary=summary,
        )


@dataclass(frozen=True)
class _CutPlan:
    """Straight-cut proposals of one bisection (see :meth:`_Refinement.cut_plan`).

    ``sides`` holds, best first, the positions in ``idx`` of side A of each
    direction's cut; ``soft`` and ``hard`` are the accepted weight windows of
    side A (with and without room for the sides' own cuts).
    """

    weights: np.ndarray
    target_a: float
    soft: tuple[float, float]
    hard: tuple[float, float]
    sides: list


class _Attempts:
    """Re-cuts that found nothing, keyed by cluster codes and their versions.

    A cluster's version changes whenever its units change; a failed attempt
    on unchanged clusters would fail again, so later passes skip it.
    """

    def __init__(self) -> None:
        self.version: dict[int, int] = {}
        self.failed: set[tuple[tuple[int, int], ...]] = set()

    def key(self, codes: list[int]) -> tuple[tuple[int, int], ...]:
        return tuple(sorted((code, self.version.get(code, 0)) for code in codes))


class _LocalPass:
    """Cluster members and neighbours frozen at the start of one local-search pass.

    A cluster changed during the pass is marked ``touched`` and not used again
    in it, so the frozen members and neighbour lists stay true for the rest.
    """

    def __init__(
        self,
        refinement: _Refinement,
        labels: np.ndarray,
        n_labels: int,
        weight: np.ndarray,
        radii: np.ndarray,
        lone_heavy: np.ndarray,
        memory: _Attempts,
    ) -> None:
        self.refinement = refinement
        self.memory = memory
        self.weight = weight
        self.radii = radii
        a, b = labels.take(refinement.rows), labels.take(refinement.indices)
        between = np.flatnonzero(a != b)  # few edges: filter before anything else
        a, b = a[between], b[between]
        between = ~lone_heavy[a] & ~lone_heavy[b]
        pair_keys = np.unique(a[between] * n_labels + b[between])
        self.pair_second = pair_keys % n_labels
        self.pair_bounds = np.searchsorted(pair_keys // n_labels, np.arange(n_labels + 1))
        self.order, self.bounds = refinement.members(labels, n_labels)
        self.touched = np.zeros(n_labels, dtype=bool)

    def adjacent(self, code: int) -> np.ndarray:
        """Untouched clusters adjacent to ``code``."""
        others = self.pair_second[self.pair_bounds[code] : self.pair_bounds[code + 1]]
        return others[~self.touched[others]]

    def attempt(self, codes: list[int], to_beat: tuple[float, float, float] | None = None):
        """Best improving re-cut of the clusters ``codes``: (score, codes, parts) or None.

        With ``to_beat`` (the best score found so far for the same violating
        cluster), only re-cuts scoring strictly lower count: the caller keeps
        the first best anyway. Either way nothing else depends on the answer:
        a None is remembered as failed, but once any re-cut is applied the
        violating cluster's version changes and the memory no longer matches.
        """
        key = self.memory.key(codes)
        if key in self.memory.failed:
            return None
        refinement = self.refinement
        union = np.concatenate([self.order[self.bounds[k] : self.bounds[k + 1]] for k in codes])
        before = refinement.score(self.weight[codes], self.radii[codes])
        best = None
        for parts in refinement.recuts(union, float(self.weight[codes].sum()), len(codes)):
            part_weight = np.array([refinement.weights[p].sum() for p in parts])
            weight_miss, half_widths = _cheap_score(refinement, part_weight, parts)
            if _cannot_improve(weight_miss, half_widths, before):
                continue  # skips the exact radii
            bound = to_beat if best is None else best[0]
            if bound is not None and _cannot_beat(refinement, weight_miss, half_widths, bound):
                continue
            after = refinement.score(part_weight, refinement.radii_of(parts))
            beats = (best is None or after < best[0]) and (to_beat is None or after < to_beat)
            if beats and _improves(after, before):
                best = (after, codes, parts)
        if best is None:
            self.memory.failed.add(key)
        return best


class _PowerAssigner:
    """Nearest centre in the power distance ``|p - c|^2 - power``, for many rounds.

    The (parts, n) distance array is laid out centre by centre and its
    buffers are reused between rounds: the reductions over centres then run
    along contiguous rows, which is several times faster than ``argmin`` over
    the short last axis of an (n, parts) array. The arithmetic (float32, which
    halves the memory traffic) and the result (first nearest centre) are those
    of ``argmin`` over ``(x - cx)^2 + (y - cy)^2 - power``. Broadcast, not
    matmul: an (n, 2) @ (2, m) product gains nothing from threaded BLAS and
    would only compete for the cores.
    """

    def __init__(self, points: np.ndarray, parts: int) -> None:
        self.x = np.ascontiguousarray(points[:, 0], dtype=np.float32)
        self.y = np.ascontiguousarray(points[:, 1], dtype=np.float32)
        shape = (parts, points.shape[0])
        self.distance = np.empty(shape, dtype=np.float32)
        self.squared = np.empty(shape, dtype=np.float32)  # |p - c|^2 of squared_for
        self.squared_for: np.ndarray | None = None
        self.is_nearest = np.empty(shape, dtype=bool)

    def assign(self, centres: np.ndarray, power: np.ndarray) -> np.ndarray:
        """Index of the nearest centre per point (the first one on ties).

        The squared distances are kept while the centres do not move (only
        the powers change then), the same float32 values either way.
        """
        centres32 = centres.astype(np.float32)
        squared = self.squared
        if self.squared_for is None or not np.array_equal(centres32, self.squared_for):
            np.subtract(self.x, centres32[:, :1], out=squared)
            np.square(squared, out=squared)
            distance = self.distance
            np.subtract(self.y, centres32[:, 1:], out=distance)
            np.square(distance, out=distance)
            squared += distance
            self.squared_for = centres32
        distance = np.subtract(squared, power.astype(np.float32)[:, None], out=self.distance)
        np.equal(distance, distance.min(axis=0), out=self.is_nearest)
        return self.is_nearest.argmax(axis=0)


class _PowerBalance:
    """Powers of a power diagram, raised for light parts and lowered for heavy ones."""

    def __init__(self, parts: int, goal: float, step: float, eps: float) -> None:
        self.parts = parts
        self.goal = goal
        self.eps = eps
        self.power = np.zeros(parts)
        # Per-centre step, halved when the weight error changes sign.
        self.step = np.full(parts, step)
        self.last_sign = np.zeros(parts)

    def restart(self) -> None:
        """Forget the sign history (a new set of units)."""
        self.last_sign = np.zeros(self.parts)

    def run(
        self,
        assigner: _PowerAssigner,
        points: np.ndarray,
        w: np.ndarray,
        centres: np.ndarray,
        iterations: int,
        centre_moves: int,
    ) -> np.ndarray:
        """Balance for up to ``iterations`` rounds; the best assignment seen.

        In the first ``centre_moves`` rounds the centres (updated in place)
        also move to their part's centroid.
        """
        parts, goal = self.parts, self.goal
        best_assign, best_error = None, math.inf
        for iteration in range(iterations):
            assign = assigner.assign(centres, self.power)
            part_weight = np.bincount(assign, w, minlength=parts)
            count = np.bincount(assign, minlength=parts)
            error = (goal - part_weight) / max(goal, self.eps)
            worst = float(np.abs(error).max())
            if worst < best_error:
                best_assign, best_error = assign, worst
            if worst <= _POWER_TOLERANCE and iteration >= min(3, iterations - 1):
                break
            sign = np.sign(error)
            self.step = np.where(sign * self.last_sign < 0, self.step * 0.5, self.step * 1.2)
            self.last_sign = sign
            self.power += self.step * error
            self.power -= self.power.mean()
            if iteration >= centre_moves:
                continue  # centres fixed: only the powers still balance the weights
            filled = count > 0
            for axis in (0, 1):
                centres[filled, axis] = (
                    np.bincount(assign, points[:, axis], minlength=parts)[filled] / count[filled]
                )
        return best_assign


def _pass_helped(before: tuple[int, float, float], after: tuple[int, float, float]) -> bool:
    """Did a local-search pass make enough progress to be worth another one?

    ``before`` and ``after`` are (violating clusters, total weight excess,
    total radius excess) at the start of the pass and of the next one. A pass
    helped when it fixed a cluster, lowered the weight excess, or cut the
    radius excess by at least ``_PASS_RADIUS_GAIN``; a further pass after one
    that did not rarely helps more (on ph_grids, never).
    """
    if after[0] < before[0] or after[1] < before[1] - _SCORE_TOLERANCE:
        return True
    return after[2] < before[2] * (1.0 - _PASS_RADIUS_GAIN)


def _cheap_score(
    refinement: _Refinement, part_weight: np.ndarray, parts: list[np.ndarray]
) -> tuple[float, np.ndarray]:
    """A re-cut's weight excess (exact) and a lower bound on each part's radius.

    Half a part's width along any direction is a lower bound on its radius
    (:func:`_half_width`): enough to reject many re-cuts without exact radii.
    """
    weight_miss = float(refinement.weight_excess(part_weight).sum())
    return weight_miss, np.array([_half_width(refinement.xy[part]) for part in parts])


def _cannot_improve(
    weight_miss: float, half_widths: np.ndarray, before: tuple[float, float, float]
) -> bool:
    """True when a re-cut surely fails :func:`_improves` (see :func:`_cheap_score`).

    More weight excess always fails. With the same weight excess, success
    needs the widest part no wider than before, so a part whose radius bound
    is already wider fails too. A cheap test that only skips losing candidates.
    """
    if weight_miss > before[0] + _SCORE_TOLERANCE:
        return True
    if weight_miss < before[0] - _SCORE_TOLERANCE:
        return False  # better weight: kept whatever the radius
    return bool(np.any(half_widths > before[2] * _WIDEST_SLACK))


def _cannot_beat(
    refinement: _Refinement,
    weight_miss: float,
    half_widths: np.ndarray,
    best: tuple[float, float, float],
) -> bool:
    """True when a re-cut surely does not score strictly below ``best`` (no exact radii).

    The score is (weight excess, radius excess, widest radius), compared as
    a tuple; the radius bounds of :func:`_cheap_score` bound the radius
    excess and the widest radius from below too.
    """
    if weight_miss != best[0]:
        return weight_miss > best[0]
    radius_miss = float(refinement.radius_excess(half_widths).sum())
    if radius_miss > best[1]:
        return True
    return radius_miss >= best[1] and float(half_widths.max()) >= best[2]


def _half_width(points: np.ndarray) -> float:
    """Half the largest width of ``points`` along four directions (<= its MEC radius)."""
    x, y = points[:, 0], points[:, 1]
    diagonal, anti = x + y, x - y
    width = max(
        float(x.max() - x.min()),
        float(y.max() - y.min()),
        float(diagonal.max() - diagonal.min()) * _HALF_SQRT2,
        float(anti.max() - anti.min()) * _HALF_SQRT2,
    )
    # Slightly less than half: rounding must never make the bound exceed the radius.
    return 0.5 * width * (1.0 - 1e-9)


def _improves(after: tuple[float, float, float], before: tuple[float, float, float]) -> bool:
    """Is a re-cut of a pair worth it? (weight excess, radius excess, max radius) each.

    Less weight outside the range always wins (the range is the harder
    constraint). With no more weight excess: less radius above the cap
    without widening the widest of the pair, or a clearly narrower pair.
    """
    tolerance = _SCORE_TOLERANCE
    if after[0] < before[0] - tolerance:
        return True
    if after[0] > before[0] + tolerance:
        return False
    if after[1] < before[1] - tolerance and after[2] <= before[2] * _WIDEST_SLACK:
        return True
    return after[1] <= before[1] + tolerance and after[2] < before[2] * 0.995


def _straight_cut(
    a_sorted: np.ndarray,
    c_sorted: np.ndarray,
    cum: np.ndarray,
    window: tuple[float, float],
    root_a: float,
    root_b: float,
    target_a: float,
    balance: float,
    per_part: float,
) -> tuple[tuple[int, float], int]:
    """Best cut of units sorted along a line: ((rank, cost), last index of side A).

    Side A is the first ``i + 1`` units (``cum[i]`` its weight). Among the
    cuts whose side-A weight lies in ``window``, the one with the smallest
    bounding-box radius (per part, ``root_* = sqrt(parts)``) plus ``balance``
    times the distance from ``target_a`` in units of ``per_part`` wins (rank
    0); without any, the cut nearest ``target_a`` (rank 1). Weights are non-negative, so ``cum`` is
    sorted and the allowed cuts are one run of indices: only that run is
    costed (same values, first minimum, as costing every cut).
    """
    start = int(np.searchsorted(cum, window[0], side="left"))
    stop = int(np.searchsorted(cum, window[1], side="right"))
    if start >= stop:
        cut = int(np.argmin(np.abs(cum - target_a)))
        return (1, float(abs(cum[cut] - target_a))), cut
    # Bounding-box radius of every allowed prefix (side A) and suffix (side B).
    head = c_sorted[:stop]
    prefix_span = np.maximum.accumulate(head)[start:] - np.minimum.accumulate(head)[start:]
    prefix = 0.5 * np.hypot(a_sorted[start:stop] - a_sorted[0], prefix_span)
    tail = c_sorted[start + 1 :][::-1]
    suffix_span = (np.maximum.accumulate(tail) - np.minimum.accumulate(tail))[::-1][: stop - start]
    suffix = 0.5 * np.hypot(a_sorted[-1] - a_sorted[start + 1 : stop + 1], suffix_span)
    cost = np.maximum(prefix / root_a, suffix / root_b)
    cost += balance * np.abs(cum[start:stop] - target_a) / per_part
    best = int(np.argmin(cost))
    return (0, float(cost[best])), start + best


def _make_sides_connected(
    indptr: np.ndarray,
    indices: np.ndarray,
    rows: np.ndarray | None,
    degree: int,
    mask: np.ndarray,
    weights: np.ndarray,
    eps: float,
) -> np.ndarray:
    """Make both sides of a cut of a connected graph connected.

    Keep the heaviest component of side A; everything else is side B. Keep
    the heaviest component of that B; everything else returns to A. Every
    other component of B touches only A (it is a maximal piece of the rest),
    so A stays connected, and B is one component.
    """
    if mask.all() or not mask.any():
        return mask
    count, component = components_within(indptr, indices, rows, mask.astype(np.int8), degree)
    if count == 2:
        return mask  # both sides already connected
    size_weight = weights + eps

    def heaviest(side: np.ndarray, count: int, component: np.ndarray) -> np.ndarray:
        component_weight = np.bincount(component, size_weight, minlength=count)
        on_side = np.zeros(count, dtype=bool)
        on_side[component[side]] = True
        component_weight[~on_side] = -1.0
        return component == int(np.argmax(component_weight))

    side_a = heaviest(mask, count, component)
    rest = ~side_a
    count, component = components_within(indptr, indices, rows, rest.astype(np.int8), degree)
    if count == 2:
        return side_a
    return ~heaviest(rest, count, component)
