"""Fewer clusters over the radius cap: the wide part of the map re-assigned under radius budgets.

Where people are few, typically along the edge of the data, a cluster
needs a large area to reach the minimum weight, and an edge cuts its circle.
Re-cutting pairs of neighbours cannot narrow it, because every cluster
around is already near the minimum weight: area has to flow across many
clusters at once, towards the few that must stay wide anyway.

:func:`fewer_over_cap` does that globally, on the clusters wider than
``_REGION_SHARE`` x cap (the wide part of the map), when those over the cap
are a tail (at most ``_TAIL_SHARE`` of the clusters; more means the cap
does not fit the data, and the pair re-cuts do what they can). Each *round*

1. gives every cluster a *radius budget*: the cap, except for the ``aim``
   widest, which may reach the widest radius found before this step (so
   the widest cluster never gets wider);
2. moves everything that lies beyond its cluster's budget (measured from
   the centre of the cluster's circle) to the nearest cluster whose budget
   reaches it;
3. balances the weights with a small linear program over *transfers*
   between clusters: for each ordered pair (j, k), what of j lies within
   k's budget, cheapest first (the increase of squared distance to the
   centre), in ``_SEGMENTS`` segments with their weight as capacity. The
   program finds the transfers that bring every weight into [min, max] at
   the least cost; chains of transfers carry weight through clusters that
   have none to spare. The moves are made, and the program is solved again
   from the new weights (``_BALANCE_ROUNDS`` at most);
4. moves each centre to the centre of its cluster's new circle.

The search runs on *blocks*, squares of ``_BLOCK_SHARE`` x cap (at least
``_BLOCK_MIN_SPACINGS`` unit spacings) pooling a few light units; heavy
units stay apart, so that no move overshoots the weight range. Each round
keeps every cluster's blocks connected: stray pieces join the neighbour
they touch most. ``aim`` starts one below the number of clusters over the
cap and drops by one each time a round reaches it; a round starts from the
one before, so the centres keep moving. Then the budget of the clusters
left wide is cut by ``_NARROWING`` while the count holds. The best round --
fewest clusters over the cap, then the narrowest widest cluster -- is
finally repeated on the units themselves (exact budgets and radii,
contiguity restored the same way), and kept only when it has fewer
clusters over the cap than before, every weight in range, every cluster
connected and none wider than its budget. A high percentile of the radii
counts clusters: this is what lowers it.

Every program has a few hundred variables (one per segment), whatever the
number of units. On ph_grids (69,226 cells, 28 clusters in the wide part)
the step takes under two tenths of a second.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import numpy as np
from scipy import sparse
from scipy.optimize import linprog
from scipy.spatial import cKDTree

from .geometry import cluster_circles
from .pieces import (
    components_within,
    edge_offsets,
    edge_rows,
    pieces_per_cluster,
    reattach_fragments,
)

# Clusters wider than this share of the cap take part.
_REGION_SHARE = 0.7
# A tail: with more than this share of the clusters over the cap, the cap
# does not fit the data, and keeping all but a few within it is no aim.
_TAIL_SHARE = 0.25
# Blocks: side as a share of the cap, but at least _BLOCK_MIN_SPACINGS times
# the units' typical spacing; budgets are tested this share of the side
# inside (a block's units lie up to about half its side from its centre); a
# block heavier than this share of the weight range keeps its units apart.
_BLOCK_SHARE = 1 / 16
_BLOCK_MIN_SPACINGS = 1.5
_SPACING_SAMPLE = 16  # every this many units measure the spacing
_BLOCK_MARGIN = 0.5
_BLOCK_WEIGHT_SHARE = 0.02
# Count: rounds at most; rounds in a row that may miss the aimed count, and
# rounds in a row whose weights cannot be balanced, before moving on.
_COUNT_ROUNDS = 16
_PATIENCE = 4
_UNBALANCED_PATIENCE = 2
# Then the widest: the wide clusters' budget is cut by this share of the
# widest radius while the count holds, this many times at most.
_NARROWING = 0.01
_NARROWING_ROUNDS = 4
# Rounds on the units, until one is valid.
_FINE_ROUNDS = 3
# Transfer segments per ordered pair of clusters, and programs per round.
_SEGMENTS = 6
_BALANCE_ROUNDS = 2
# Weights are balanced this share of the range inside the bounds (or half
# the weight of a heavy unit or block, if more), so that whole units or
# blocks moved afterwards stay within them.
_INNER_SHARE = 0.0025
# Candidate clusters per point are found by brute force up to this many
# point-centre pairs, else among the _KD_NEIGHBOURS nearest centres.
_BRUTE_FORCE_PAIRS = 4_000_000
_KD_NEIGHBOURS = 8

# units -> (indptr, indices, edge rows or None, degree) of the graph they induce
Subgraph = Callable[[np.ndarray], tuple]


class _Round(NamedTuple):
    """An assignment with its circles, count over the cap and validity."""

    assign: np.ndarray
    centres: np.ndarray
    radii: np.ndarray
    over: int
    balanced: bool
    valid: bool

    @property
    def rank(self) -> tuple[int, float]:
        """Fewer clusters over the cap first, then the narrower widest cluster."""
        return self.over, float(self.radii.max())


def fewer_over_cap(
    labels: np.ndarray,
    radii: np.ndarray,
    xy: np.ndarray,
    weights: np.ndarray,
    graph: tuple[np.ndarray, np.ndarray],
    *,
    cap: float,
    low: float,
    high: float,
    subgraph: Subgraph | None,
    eps: float = 0.0,
    check_cancelled: Callable[[], None] = lambda: None,
) -> tuple[np.ndarray, np.ndarray] | None:
    """Re-assign the wide part of the map so that fewer clusters exceed ``cap``.

    Parameters
    ----------
    labels : ndarray of int, shape (n,)
        Cluster code per unit; ``radii`` has one entry per code.
    radii : ndarray of shape (n_codes,)
        Minimum-enclosing-circle radius per code (0 for unused codes).
    xy, weights : ndarray
        Metric coordinates (n, 2) and weights (n,) of all units.
    graph : (indptr, indices)
        The units' neighbour graph, CSR arrays (for their spacing).
    cap : float
        Radius cap.
    low, high : float
        Weight range (0 and inf when unbounded).
    subgraph : callable or None
        ``subgraph(units)`` gives the graph ``units`` induce, as
        ``_Refinement.subgraph`` does (CSR arrays, edge rows or None, degree
        of a padded table); None when contiguity is off. Stray pieces are
        given back on it (``eps``: tie-break weight per unit).
    check_cancelled : callable
        Called between rounds; raises to stop.

    Returns
    -------
    (labels, radii) or None
        New codes (the same code set) and radii, or None when nothing better
        was found, or when more than ``_TAIL_SHARE`` of the clusters exceed
        the cap (then it is no tail).
    """
    n_over = int((radii > cap).sum())
    n_clusters = int(np.count_nonzero(np.bincount(labels, minlength=radii.size)))
    codes = np.flatnonzero(radii > _REGION_SHARE * cap)
    if n_over == 0 or n_over > _TAIL_SHARE * n_clusters or codes.size < 2:
        return None
    local_of = np.full(radii.size, -1, dtype=np.int64)
    local_of[codes] = np.arange(codes.size)
    units = np.flatnonzero(local_of[labels] >= 0)
    points, unit_weights = xy[units], weights[units]
    unit_assign = local_of[labels[units]]
    m = codes.size
    span = (high - low) if math.isfinite(high) else max(low, 1.0)
    # Blocks of a few units even under a small cap (which would make them single units).
    side = max(cap * _BLOCK_SHARE, _BLOCK_MIN_SPACINGS * _spacing(units, xy, graph))
    blocks = _Blocks(points, unit_weights, side, _BLOCK_WEIGHT_SHARE * span)
    induced = None if subgraph is None else subgraph(units)
    if induced is not None:
        blocks.link(induced)
    # A block stands for units up to about half its side away, so its test
    # leaves that margin: the units' round then reaches what blocks missed.
    margin = _BLOCK_MARGIN * side
    coarse = _Balancer(blocks.points, blocks.weights, low, high, span, margin)
    centre_x, centre_y, _ = cluster_circles(points, unit_assign, m)
    start = _Round(
        blocks.majority(unit_assign, m),
        np.column_stack([centre_x, centre_y]),
        radii[codes],
        n_over,
        True,
        False,
    )
    reattach_blocks = blocks.reattach if induced is not None else None
    search = _Search(coarse, reattach_blocks, m, cap, low, high, check_cancelled)
    limit = float(radii.max())  # the widest cluster never gets wider
    best = search.fewer(start, limit)
    if best is None:
        return None
    best = search.narrower(*best)
    # The best round once more, on the units: exact budgets and radii.
    outcome, budget = best
    fine = _Balancer(points, unit_weights, low, high, span)
    assign, centres = outcome.assign[blocks.of_unit], outcome.centres
    for _ in range(_FINE_ROUNDS):
        assign = fine.run(assign, centres, budget)
        if induced is not None:
            assign = reattach_fragments(*induced, assign, unit_weights, eps)
        final = _measure(points, unit_weights, assign, m, cap, low, high, limit)
        if final.valid:
            break
        centres = final.centres
    if not final.valid or final.over >= n_over:
        return None
    if induced is not None:
        # A stray piece with no neighbour in the wide part to rejoin would
        # leave its cluster in two. (The wide part holds every unit of its
        # clusters, so their pieces on its graph are their pieces.)
        pieces = components_within(*induced[:3], final.assign, induced[3])
        if np.any(pieces_per_cluster(*pieces, final.assign, m) != 1):
            return None
    labels = labels.copy()
    labels[units] = codes[final.assign]
    radii = radii.copy()
    radii[codes] = final.radii
    return labels, radii


class _Search:
    """Rounds on the blocks: fewer clusters over the cap, then a narrower widest one."""

    def __init__(
        self,
        balancer: _Balancer,
        reattach: Callable[[np.ndarray], np.ndarray] | None,
        m: int,
        cap: float,
        low: float,
        high: float,
        check_cancelled: Callable[[], None],
    ) -> None:
        self.balancer = balancer
        self.reattach = reattach
        self.m = m
        self.cap = cap
        self.low = low
        self.high = high
        self.check_cancelled = check_cancelled

    def round(self, start: _Round, wide: np.ndarray, limit: float) -> tuple[_Round, np.ndarray]:
        """One round from ``start``: budgets (``limit`` for ``wide``), moves, balance."""
        budget = np.full(self.m, float(self.cap))
        budget[wide] = limit
        balancer = self.balancer
        assign = balancer.run(start.assign, start.centres, budget)
        if self.reattach is not None:
            assign = self.reattach(assign)
        outcome = _measure(
            balancer.points, balancer.weights, assign, self.m, self.cap, self.low, self.high, limit
        )
        self.check_cancelled()
        return outcome, budget

    def fewer(self, start: _Round, limit: float) -> tuple[_Round, np.ndarray] | None:
        """Lower the count over the cap one at a time; the best valid round and its budgets."""
        widest_first = np.argsort(-start.radii, kind="stable")
        aim = start.over - 1
        best = None
        misses = unbalanced = 0
        current = start
        for _ in range(_COUNT_ROUNDS):
            outcome, budget = self.round(current, widest_first[:aim], limit)
            better = best is None or outcome.rank < best[0].rank
            if outcome.valid and outcome.over < start.over and better:
                best = (outcome, budget)
            if outcome.balanced and outcome.over <= aim:
                aim -= 1
                misses = unbalanced = 0
            else:
                misses += 1
                unbalanced = 0 if outcome.balanced else unbalanced + 1
            if aim < 0 or misses >= _PATIENCE or unbalanced >= _UNBALANCED_PATIENCE:
                break
            if outcome.balanced:
                current = outcome
            else:
                # No transfers balance these budgets: retry from the last
                # balanced round, with its widest clusters as the wide ones.
                widest_first = np.argsort(-current.radii, kind="stable")
        return best

    def narrower(self, best: _Round, budget: np.ndarray) -> tuple[_Round, np.ndarray]:
        """Lower the wide clusters' budget while the count holds."""
        wide = np.flatnonzero(budget > self.cap)
        for _ in range(_NARROWING_ROUNDS):
            limit = float(best.radii.max()) * (1.0 - _NARROWING)
            if limit <= self.cap:
                break
            outcome, new_budget = self.round(best, wide, limit)
            if not (outcome.valid and outcome.over <= best.over):
                break
            best, budget = outcome, new_budget
        return best, budget


def _spacing(units: np.ndarray, xy: np.ndarray, graph: tuple[np.ndarray, np.ndarray]) -> float:
    """Typical distance between neighbouring units: the median, over a sample of
    ``units``, of the distance to their nearest neighbour in ``graph`` (0: none has one)."""
    indptr, indices = graph
    sample = units[::_SPACING_SAMPLE]
    sample = sample[indptr[sample + 1] > indptr[sample]]
    if sample.size == 0:
        return 0.0
    edges, degree = edge_offsets(indptr, sample)
    starts = np.cumsum(degree) - degree
    length = np.hypot(*(xy[indices[edges]] - np.repeat(xy[sample], degree, axis=0)).T)
    return float(np.median(np.minimum.reduceat(length, starts)))


def _measure(
    points: np.ndarray,
    weights: np.ndarray,
    assign: np.ndarray,
    m: int,
    cap: float,
    low: float,
    high: float,
    limit: float,
) -> _Round:
    """Circles, count over the cap and validity (weights in range, no cluster empty or over
    ``limit``) of an assignment."""
    centre_x, centre_y, radii = cluster_circles(points, assign, m)
    weight = np.bincount(assign, weights, minlength=m)
    balanced = bool(np.all((weight >= low) & (weight <= high)))
    present = bool(np.all(np.bincount(assign, minlength=m) > 0))
    valid = balanced and present and float(radii.max()) <= limit * (1 + 1e-9)
    centres = np.column_stack([centre_x, centre_y])
    return _Round(assign, centres, radii, int((radii > cap).sum()), balanced, valid)


class _Blocks:
    """The wide part's units pooled in squares: weight and centre of each block."""

    def __init__(self, points: np.ndarray, weights: np.ndarray, side: float, max_weight: float):
        cell = np.floor((points - points.min(axis=0)) / side).astype(np.int64)
        key = cell[:, 0] * (int(cell[:, 1].max()) + 1) + cell[:, 1]
        _, of_unit = np.unique(key, return_inverse=True)
        of_unit = of_unit.reshape(-1)
        # Heavy blocks (dense places) keep their units apart: a whole block
        # moved at once would overshoot the weight range.
        heavy = np.bincount(of_unit, weights)[of_unit] > max_weight
        key[heavy] = int(key.max()) + 1 + np.arange(int(heavy.sum()))
        _, of_unit = np.unique(key, return_inverse=True)
        self.of_unit = of_unit.reshape(-1)
        n_blocks = int(self.of_unit.max()) + 1
        count = np.bincount(self.of_unit, minlength=n_blocks)
        self.weights = np.bincount(self.of_unit, weights, minlength=n_blocks)
        sums = [np.bincount(self.of_unit, points[:, axis], minlength=n_blocks) for axis in (0, 1)]
        self.points = np.column_stack(sums) / count[:, None]

    def link(self, induced: tuple) -> None:
        """Blocks are neighbours where their units are; each touching pair is stored once.

        ``induced``: the graph the units induce (see :func:`fewer_over_cap`).
        """
        indptr, indices, rows, degree = induced
        if rows is None:  # a padded table: every row holds ``degree`` edges
            rows = np.repeat(np.arange(indptr.shape[0] - 1), degree)
        # Self-loops (edges leaving the units, padding) fall within one block.
        first, second = self.of_unit[rows], self.of_unit[indices]
        between = first != second
        n_blocks = self.weights.size
        linked = sparse.csr_matrix(
            (np.ones(int(between.sum()), dtype=np.int8), (first[between], second[between])),
            shape=(n_blocks, n_blocks),
        )
        self.indptr, self.indices = linked.indptr, linked.indices

    def reattach(self, assign: np.ndarray) -> np.ndarray:
        """Every cluster's blocks connected: stray pieces join the neighbour they touch most."""
        return reattach_fragments(
            self.indptr, self.indices, edge_rows(self.indptr), 0, assign, self.weights, 0.0
        )

    def majority(self, unit_assign: np.ndarray, m: int) -> np.ndarray:
        """The cluster holding most units of each block."""
        pair, count = np.unique(self.of_unit * m + unit_assign, return_counts=True)
        block, cluster = pair // m, pair % m
        order = np.lexsort((-count, block))
        first = np.r_[True, block[order][1:] != block[order][:-1]]
        chosen = np.empty(self.weights.size, dtype=np.int64)
        chosen[block[order][first]] = cluster[order][first]
        return chosen


class _Balancer:
    """Assignment of points (units or blocks) under radius budgets, weights balanced.

    ``margin`` is kept inside every budget (blocks: the extent of their units).
    """

    def __init__(
        self,
        points: np.ndarray,
        weights: np.ndarray,
        low: float,
        high: float,
        span: float,
        margin: float = 0.0,
    ) -> None:
        self.points = points
        self.points32 = points.astype(np.float32)
        self.weights = weights
        inner = max(_INNER_SHARE * span, 0.5 * float(np.quantile(weights, 0.99)))
        self.low = low + inner if low > 0 else low
        self.high = high - inner
        self.margin = margin

    def slots(
        self, centres: np.ndarray, budget: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(cluster, squared distance, within budget) per point and slot.

        A point that no budget reaches counts as within the budget of the
        cluster nearest relative to its budget (which will then exceed it).
        """
        n, m = self.points.shape[0], centres.shape[0]
        if n * m <= _BRUTE_FORCE_PAIRS:
            centres32 = centres.astype(np.float32)
            squared = self.points32[:, :1] - centres32[:, 0]
            np.square(squared, out=squared)
            dy = self.points32[:, 1:] - centres32[:, 1]
            np.square(dy, out=dy)
            squared += dy
            cluster = np.broadcast_to(np.arange(m), (n, m))
            reach = (np.maximum(budget - self.margin, 0) ** 2).astype(np.float32)
        else:
            k = min(_KD_NEIGHBOURS, m)
            distance, nearest = cKDTree(centres).query(self.points, k=k)
            cluster = nearest.reshape(n, k)
            squared = (distance.reshape(n, k) ** 2).astype(np.float32)
            reach = (np.maximum(budget[cluster] - self.margin, 0) ** 2).astype(np.float32)
        within = squared <= reach
        lost = np.flatnonzero(~within.any(axis=1))
        if lost.size:
            relative = squared[lost] / (budget[cluster[lost]] ** 2)
            within[lost, relative.argmin(axis=1)] = True
        return cluster, squared, within

    def run(self, assign: np.ndarray, centres: np.ndarray, budget: np.ndarray) -> np.ndarray:
        """Points moved within budgets, then weights balanced by transfers."""
        m = centres.shape[0]
        cluster, squared, within = self.slots(centres, budget)
        assign = assign.copy()
        # A point beyond its own cluster's budget goes to its nearest candidate.
        beyond = np.flatnonzero(~((cluster == assign[:, None]) & within).any(axis=1))
        if beyond.size:
            nearest = np.where(within[beyond], squared[beyond], np.inf).argmin(axis=1)
            assign[beyond] = cluster[beyond, nearest]
        point, slot = np.nonzero(within)
        candidates = (point, cluster[point, slot], squared[point, slot].astype(float))
        for _ in range(_BALANCE_ROUNDS):
            weight = np.bincount(assign, self.weights, minlength=m)
            if np.all((weight >= self.low) & (weight <= self.high)):
                break
            moved = self.transfer(assign, weight, candidates, m)
            if moved is None:
                break
            assign = moved
        return assign

    def transfer(
        self,
        assign: np.ndarray,
        weight: np.ndarray,
        candidates: tuple[np.ndarray, np.ndarray, np.ndarray],
        m: int,
    ) -> np.ndarray | None:
        """One transfer program: the cheapest moves bringing every weight into range.

        ``candidates`` are (point, cluster, squared distance) of every pair
        within the cluster's budget. None when no transfers can balance.
        """
        point, cluster, squared = candidates
        own = cluster == assign[point]
        own_squared = np.zeros(assign.size)
        own_squared[point[own]] = squared[own]
        movers, target = point[~own], cluster[~own]
        if movers.size == 0:
            return None
        pair = assign[movers] * m + target
        cost = squared[~own] - own_squared[movers]
        # Sort by pair, then cost: one float key (cost scaled into [0, 0.5)).
        low_cost, high_cost = float(cost.min()), float(cost.max())
        order = np.argsort(pair + 0.5 * (cost - low_cost) / (high_cost - low_cost + 1.0))
        pair, movers, cost = pair[order], movers[order], cost[order]
        # Segments: each pair's movers, cheapest first, cut in _SEGMENTS runs.
        new_pair = np.r_[True, pair[1:] != pair[:-1]]
        starts = np.flatnonzero(new_pair)
        sizes = np.diff(np.r_[starts, pair.size])
        group = np.cumsum(new_pair) - 1
        rank = np.arange(pair.size) - starts[group]
        segment_key = group * _SEGMENTS + rank * _SEGMENTS // sizes[group]
        new_segment = np.r_[True, segment_key[1:] != segment_key[:-1]]
        segment = np.cumsum(new_segment) - 1
        n_segments = int(segment[-1]) + 1
        capacity = np.bincount(segment, self.weights[movers], minlength=n_segments)
        last = np.r_[np.flatnonzero(new_segment)[1:] - 1, pair.size - 1]
        slope = cost[last]  # the dearest move of the segment: convex per pair
        into, out_of = pair[last] % m, pair[last] // m
        columns = np.arange(n_segments)
        inflow = sparse.csr_matrix(
            (
                np.r_[np.ones(n_segments), -np.ones(n_segments)],
                (np.r_[into, out_of], np.r_[columns, columns]),
            ),
            shape=(m, n_segments),
        )
        rows, bounds = [], []
        if math.isfinite(self.high):
            rows.append(inflow)
            bounds.append(self.high - weight)
        if self.low > 0:
            rows.append(-inflow)
            bounds.append(weight - self.low)
        if not rows:
            return None
        solution = linprog(
            slope / max(abs(low_cost), abs(high_cost), 1.0),
            A_ub=sparse.vstack(rows).tocsr(),
            b_ub=np.concatenate(bounds),
            bounds=np.column_stack([np.zeros(n_segments), capacity]),
            method="highs",
        )
        if solution.status != 0:
            return None
        flow = np.bincount(group[last], solution.x, minlength=starts.size)
        assign = assign.copy()
        moved = np.zeros(assign.size, dtype=bool)
        for g in np.argsort(-flow, kind="stable").tolist():
            wanted = flow[g]
            if wanted <= 1e-9:
                break
            members = movers[starts[g] : starts[g] + sizes[g]]
            members = members[~moved[members]]
            carried = np.cumsum(self.weights[members])
            # Whole points, to the nearest total.
            take = int(np.searchsorted(carried - 0.5 * self.weights[members], wanted, "right"))
            chosen = members[:take]
            assign[chosen] = pair[starts[g]] % m
            moved[chosen] = True
        return assign
