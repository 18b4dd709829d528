"""The score of a clustering, the search space for k, and the search over it.

Score
-----
A clustering is scored as in IDinsight's clustering-aws (lower is better)::

    score = f_bias * (r_target / w_target) * |w_target - w_median|
            + |r_target - r_median|

where ``w_median`` is the median cluster weight, ``r_median`` the median
minimum-enclosing-circle radius of the clusters (metres) and ``f_bias`` the
weight importance factor. The factor ``r_target / w_target`` puts both terms
in metres.

Search space
------------
The original drew ``max_trials`` values of k at random from a normal
distribution around ``k0 = max(int(total_weight / desired_weight), 1)`` with
sigma ``k0 / 3``. Here the space is deterministic: every integer k in::

    [max(1, k0 - h), min(n, k0 + h)],   h = max(ceil(2 * k0 / 3), 4)

i.e. ``k0 ± 2 sigma`` (95 % of the original's draws fall there), widened to
at least ``k0 ± 4`` so that small clusters (k0 = 1 or 2 in the extra passes)
can still be split three, four or five ways when their radius calls for it.
``k0`` itself is clamped to ``1 .. n`` first, so the space always lies within
``1 .. n`` (n = number of units) and is never empty.

Search
------
The score is a function of one integer, roughly "V"-shaped (the weight term
falls with k until the median weight passes the target, the radius term falls
until the median radius passes its target) with k-means noise on top. So
instead of evaluating the whole space, :func:`search_k` runs a deterministic
coarse-to-fine search:

1. If the space has at most ``max_trials`` values and at most
   ``EXHAUSTIVE_LIMIT``, every value is evaluated (exact best), closest to
   ``k0`` first.
2. Otherwise ``k0`` and ``COARSE_POINTS - 1`` evenly spaced values (ends
   included) are evaluated, closest to ``k0`` first; then the search
   repeatedly bisects the unevaluated gaps on both sides of the best value
   found so far and of the runner-up (so one noisy coarse point cannot trap
   it), until both are bracketed by evaluated neighbours at distance 1, or
   the budget is used.

The budget ``max_trials`` is an upper bound on evaluations; each k is
evaluated at most once. Ties are broken by the smallest score, then the
smallest k. Every evaluation is recorded as a finished Optuna trial (parameter
``k``, its score as the value; seeded sampler), so the search is reproducible
and inspectable.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # imported lazily: optuna alone takes ~0.4 s to import
    import optuna

#: Spaces up to this size (and within the budget) are searched exhaustively.
EXHAUSTIVE_LIMIT = 12
#: Number of evenly spaced values evaluated first in larger spaces.
COARSE_POINTS = 7
#: Minimum half-width of the search space around k0.
MIN_HALF_WIDTH = 4


def clustering_score(
    median_weight: float,
    median_radius: float,
    desired_cluster_weight: float,
    desired_cluster_radius: float,
    weight_importance_factor: float = 1.0,
) -> float:
    """Score of a clustering from its median weight and median radius; lower is better.

    Parameters
    ----------
    median_weight : float
        Median of the cluster weights.
    median_radius : float
        Median of the clusters' minimum-enclosing-circle radii, in metres.
    desired_cluster_weight, desired_cluster_radius : float
        Targets (``w_target``, ``r_target``).
    weight_importance_factor : float, default 1.0
        ``f_bias``: how much the weight term counts relative to the radius term.

    Returns
    -------
    float
        ``f_bias * (r_target / w_target) * |w_target - w_median| + |r_target - r_median|``.
    """
    scale = desired_cluster_radius / desired_cluster_weight
    return float(
        weight_importance_factor * scale * abs(desired_cluster_weight - median_weight)
        + abs(desired_cluster_radius - median_radius)
    )


def expected_n_clusters(total_weight: float, desired_cluster_weight: float, n_units: int) -> int:
    """``k0 = max(int(total_weight / desired_weight), 1)``, clamped to ``n_units``."""
    k0 = max(int(total_weight / desired_cluster_weight), 1)
    return max(1, min(k0, n_units))


def search_space(k0: int, n_units: int) -> tuple[int, int]:
    """Inclusive bounds ``(k_min, k_max)`` of the values of k to search.

    See the module docstring: ``k0 ± max(ceil(2 k0 / 3), 4)``, within ``1 .. n_units``.
    """
    if n_units < 1:
        raise ValueError("n_units must be at least 1.")
    k0 = max(1, min(int(k0), n_units))
    half_width = max(math.ceil(2 * k0 / 3), MIN_HALF_WIDTH)
    return max(1, k0 - half_width), min(n_units, k0 + half_width)


def expected_trials(k_bounds: tuple[int, int], max_trials: int) -> int:
    """A rough estimate of how many evaluations :func:`search_k` makes (for progress bars)."""
    size = k_bounds[1] - k_bounds[0] + 1
    if size <= min(max_trials, EXHAUSTIVE_LIMIT):
        return size
    gap = size / (COARSE_POINTS - 1)
    return min(max_trials, size, COARSE_POINTS + 3 * max(1, math.ceil(math.log2(max(gap, 2)))))


@dataclass
class SearchOutcome:
    """What :func:`search_k` found.

    Attributes
    ----------
    best_k : int
        The k with the smallest score (ties: the smallest k).
    best_score : float
        Its score.
    evaluated : list of (k, score) in evaluation order
    """

    best_k: int
    best_score: float
    evaluated: list[tuple[int, float]] = field(default_factory=list)


def _rank(scores: dict[int, float]) -> list[int]:
    """Evaluated k sorted best first: smallest score, then smallest k."""
    return sorted(scores, key=lambda k: (scores[k], k))


def _coarse_grid(k_min: int, k_max: int, n_points: int, k_start: int) -> list[int]:
    """``k_start`` plus evenly spaced values from k_min to k_max, closest to k_start first.

    The order matters when the budget is smaller than the grid: the values
    nearest ``k_start`` are evaluated first.
    """
    grid = np.rint(np.linspace(k_min, k_max, max(n_points - 1, 2))).astype(int).tolist()
    values = set(grid) | {k_start}
    return sorted(values, key=lambda k: (abs(k - k_start), k))


def _gap_midpoints(k: int, evaluated: Sequence[int], k_min: int, k_max: int) -> list[int]:
    """Midpoints of the unevaluated gaps right beside k (left one first).

    The space's ends count as evaluated neighbours at ``k_min - 1`` and
    ``k_max + 1``, so a gap between k and an unevaluated end is bisected too.
    """
    done = sorted(evaluated)
    position = done.index(k)
    left = done[position - 1] if position > 0 else k_min - 1
    right = done[position + 1] if position + 1 < len(done) else k_max + 1
    midpoints = []
    if k - left > 1:
        midpoints.append((left + k) // 2)
    if right - k > 1:
        midpoints.append((k + right + 1) // 2)
    return midpoints


def search_k(
    k_bounds: tuple[int, int],
    max_trials: int,
    evaluate: Callable[[list[int]], list[float]],
    *,
    k_start: int | None = None,
    seed: int = 0,
    record_with_optuna: bool = False,
) -> SearchOutcome:
    """Deterministic coarse-to-fine search for the k with the smallest score.

    Parameters
    ----------
    k_bounds : (int, int)
        Inclusive bounds of the search space (see :func:`search_space`).
    max_trials : int
        Upper bound on the number of evaluations (>= 1).
    evaluate : callable
        ``evaluate(list_of_k) -> list_of_scores``; called with batches of
        values that may be evaluated independently (e.g. in parallel). Must be
        a pure function of k for the search to be deterministic.
    k_start : int, optional
        The expected best k (``k0``), evaluated first; default: the middle of
        the space.
    seed : int
        Seed of the Optuna sampler that records the trials.
    record_with_optuna : bool, default False
        Also record each evaluation in an Optuna study as it happens. The
        result does not depend on it. Off by default: importing Optuna costs
        ~0.4 s, and :func:`optuna_study` builds the same study afterwards from
        the evaluations (``ClusteringResult.optuna_study`` does so per pass).

    Returns
    -------
    SearchOutcome
    """
    k_min, k_max = int(k_bounds[0]), int(k_bounds[1])
    if not 1 <= k_min <= k_max:
        raise ValueError(f"Invalid search space {k_bounds}.")
    if max_trials < 1:
        raise ValueError("max_trials must be at least 1.")

    k_start = (k_min + k_max) // 2 if k_start is None else min(max(int(k_start), k_min), k_max)
    study = _new_study(seed, k_min, k_max) if record_with_optuna else None
    scores: dict[int, float] = {}
    order: list[tuple[int, float]] = []

    def run(batch: list[int]) -> None:
        batch = [k for k in dict.fromkeys(batch) if k not in scores]
        batch = batch[: max_trials - len(scores)]
        if not batch:
            return
        results = evaluate(batch)
        for k, score in zip(batch, results):
            scores[k] = float(score)
            order.append((k, float(score)))
            if study is not None:
                _record(study, k, k_min, k_max, float(score))

    space_size = k_max - k_min + 1
    if space_size <= min(max_trials, EXHAUSTIVE_LIMIT):
        run(sorted(range(k_min, k_max + 1), key=lambda k: (abs(k - k_start), k)))
    else:
        run(_coarse_grid(k_min, k_max, COARSE_POINTS, k_start))
        while len(scores) < max_trials:
            batch: list[int] = []
            # Refine around the best and the runner-up: k-means noise can make
            # a single coarse value look better than its true neighbourhood.
            for k in _rank(scores)[:2]:
                batch.extend(_gap_midpoints(k, list(scores), k_min, k_max))
            batch = [k for k in dict.fromkeys(batch) if k not in scores]
            if not batch:
                break
            run(batch)

    best = _rank(scores)[0]
    return SearchOutcome(best_k=best, best_score=scores[best], evaluated=order)


def optuna_study(
    evaluated: Sequence[tuple[int, float]],
    k_bounds: tuple[int, int] | None = None,
    seed: int = 0,
) -> optuna.Study:
    """An Optuna study holding one finished trial per evaluated k, in evaluation order.

    For inspecting a search with Optuna's tools (``optuna.visualization``,
    ``study.trials_dataframe()``, ``study.best_params``).

    Parameters
    ----------
    evaluated : sequence of (k, score)
        E.g. :attr:`SearchOutcome.evaluated`, or ``k`` and ``score`` of a
        pass's rows of ``ClusteringResult.trials``.
    k_bounds : (int, int), optional
        The search space of parameter ``k``; default: the evaluated range.
    seed : int
        Seed of the study's sampler (which never draws).

    Returns
    -------
    optuna.Study
    """
    pairs = [(int(k), float(score)) for k, score in evaluated]
    if k_bounds is None:
        ks = [k for k, _ in pairs] or [1]
        k_bounds = (min(ks), max(ks))
    study = _new_study(seed, int(k_bounds[0]), int(k_bounds[1]))
    for k, score in pairs:
        _record(study, k, int(k_bounds[0]), int(k_bounds[1]), score)
    return study


def _new_study(seed: int, k_min: int, k_max: int) -> optuna.Study:
    # Imported here, not at module level: optuna is optional (only this
    # needs it), and importing it costs ~0.4 s.
    try:
        import optuna
    except ImportError:
        from .dependencies import install_instructions

        raise ImportError(
            install_instructions(["optuna"], "ClusteringResult.optuna_study()")
        ) from None

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # Every trial is added finished, with the k chosen above, so the sampler
    # never draws; it is seeded anyway so that nothing in the study is random.
    sampler = optuna.samplers.RandomSampler(seed=seed)
    return optuna.create_study(direction="minimize", sampler=sampler)


def _record(study: optuna.Study, k: int, k_min: int, k_max: int, score: float) -> None:
    import optuna

    # A finished trial added as such: the same record as enqueue/ask/suggest/
    # tell at a third of the cost (pure Python, so it holds the GIL: it
    # matters when partitions run in threads).
    study.add_trial(
        optuna.trial.create_trial(
            params={"k": k},
            distributions={"k": optuna.distributions.IntDistribution(k_min, k_max)},
            value=score,
        )
    )
