"""Stratified selection of PSUs with exact inclusion probabilities.

The clusters (PSUs) are formed first, so the probability that each one enters
the sample is known exactly and written next to it. Within every stratum
``h`` with ``N_h`` clusters and sample size ``n_h`` one of three methods draws
the sample:

``"systematic"`` (default): systematic PPS (probability proportional to size)
    with a random start, after a geographic *serpentine* ordering of the
    clusters (implicit stratification, see :func:`serpentine_order`). Units
    are laid end to end along a line, each taking a length equal to its
    inclusion probability; ``n`` points ``u, u + 1, ..., u + n - 1`` with
    ``u ~ U(0, 1)`` pick the units they fall in. Each unit's inclusion
    probability is exactly its length.
``"srs"``: simple random sampling without replacement, ``pi = n_h / N_h``.
``"sampford"``: Sampford's PPS without replacement. It has the same
    inclusion probabilities as systematic PPS but every pair of units has a
    positive joint probability, which the usual variance estimators need.
    It is drawn exactly as a conditional Poisson sample (independent
    Bernoulli(pi) draws, kept when exactly ``n`` units come out) accepted with
    probability ``(n - sum of the sample's pi) / n``; the accepted samples
    follow Sampford's design ``p(s) ∝ (n - Σ_s pi) Π_s pi / (1 - pi)``.

Inclusion probabilities (both PPS methods): ``pi_i = n_h * size_i / total_h``.
A cluster whose size reaches the sampling interval ``total_h / n_h`` would get
``pi >= 1``: it is a *certainty* unit, taken with probability 1, and the
interval is recomputed on the other clusters with the remaining sample size.
This repeats, because removing big clusters can lift others over the new
interval. The final probabilities are ``pi = 1`` for certainty units and
``pi_i = n_rem * size_i / total_rem`` for the rest; they add up to ``n_h`` in
every stratum. The design weight is ``1 / pi``.

Replacement PSUs (``n_replacements = r > 0``): after the main sample, ``r``
more clusters per stratum are drawn *among the clusters not in the main
sample*, with the same method and sizes (probabilities recomputed on those
clusters), and then given a random rank ``1..r``: rank 1 is the first to use.
Their ``pi`` and design weight are their *main-sample* values. Substituting a
replacement for a main-sample PSU changes the design, so those weights are
only approximately right once a replacement is used; record every
substitution and treat it as non-response in the weighting.

Everything random comes from one ``numpy.random.Generator``: the same seed
gives the same sample. This module never imports QGIS.
"""

from __future__ import annotations

import html
import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Union

import numpy as np
import pandas as pd

from .errors import ClusteringInputError

METHODS = ("systematic", "srs", "sampford")
METHOD_LABELS = {
    "systematic": "Systematic PPS",
    "srs": "Simple random sampling",
    "sampford": "PPS Sampford",
}
# Label of the only stratum when no strata are given.
SINGLE_STRATUM = "all"

# A unit is a certainty unit when n * size >= total * (1 - this): tolerates
# floating-point rounding so that, e.g., n equal units out of n are all certain.
_CERTAINTY_TOLERANCE = 1e-12
# Sampford trials (one trial = one Poisson draw over the stratum) before giving up.
_SAMPFORD_MAX_TRIALS = 2_000_000
# Uniforms drawn per batch of Sampford trials (memory bound).
_SAMPFORD_BATCH_VALUES = 1_000_000

SampleSize = Union[int, Mapping[Hashable, int]]


# ---------------------------------------------------------------------------
# Building blocks
# ---------------------------------------------------------------------------


def inclusion_probabilities(
    sizes: Sequence[float] | np.ndarray, n: int
) -> tuple[np.ndarray, np.ndarray]:
    """PPS inclusion probabilities of one stratum, with certainty units.

    Parameters
    ----------
    sizes : array-like of shape (N,)
        Positive measures of size.
    n : int
        Sample size, ``1 <= n <= N``.

    Returns
    -------
    pi : ndarray of shape (N,)
        ``1`` for certainty units, ``n_rem * size / total_rem`` for the others;
        ``pi.sum() == n`` up to rounding.
    certainty : ndarray of bool, shape (N,)
        Units whose size reached the (recomputed) sampling interval.

    Notes
    -----
    Certainty units are found iteratively: after removing the units whose
    size is at least ``total / n``, the interval is recomputed on the rest
    with the remaining sample size, which may reveal new certainty units.
    Inputs are not validated here; :class:`PsuSelector` does that.
    """
    sizes = np.asarray(sizes, dtype=float)
    certainty = np.zeros(sizes.shape[0], dtype=bool)
    if n >= sizes.shape[0]:
        certainty[:] = True
        return np.ones(sizes.shape[0]), certainty
    while True:
        n_remaining = n - int(certainty.sum())
        total_remaining = float(sizes[~certainty].sum())
        if n_remaining <= 0 or total_remaining <= 0:
            break
        new = ~certainty & (sizes * n_remaining >= total_remaining * (1.0 - _CERTAINTY_TOLERANCE))
        if not new.any():
            break
        certainty |= new
    pi = np.ones(sizes.shape[0])
    rest = ~certainty
    n_remaining = n - int(certainty.sum())
    if rest.any():
        total_remaining = float(sizes[rest].sum())
        pi[rest] = n_remaining * sizes[rest] / total_remaining if n_remaining > 0 else 0.0
    return pi, certainty


def serpentine_order(
    x: Sequence[float] | np.ndarray,
    y: Sequence[float] | np.ndarray,
    n_rows: int | None = None,
) -> np.ndarray:
    """Order units along a serpentine path over a coarse grid of rows.

    The bounding box of the points is cut into ``n_rows`` horizontal bands
    (by ``y``); bands are visited from south to north, west to east in the
    first band, east to west in the next, and so on. Neighbouring units in the
    order are close on the ground, so a systematic draw along it spreads the
    sample geographically (implicit stratification).

    Parameters
    ----------
    x, y : array-like of shape (N,)
        Coordinates (e.g. cluster centroids). Units with a non-finite
        coordinate go last, in input order.
    n_rows : int, optional
        Number of bands. Default ``round(sqrt(N * height / width))``, clipped
        to ``[1, N]``: roughly square cells holding about one unit each on
        average, so each band holds about ``sqrt(N)`` units.

    Returns
    -------
    ndarray of int, shape (N,)
        Indices of the units in serpentine order (ties keep input order).
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    located = np.isfinite(x) & np.isfinite(y)
    located_idx = np.flatnonzero(located)
    unlocated_idx = np.flatnonzero(~located)
    count = located_idx.size
    if count == 0:
        return unlocated_idx
    xs, ys = x[located_idx], y[located_idx]
    width = float(xs.max() - xs.min())
    height = float(ys.max() - ys.min())
    if n_rows is None:
        if height <= 0:
            n_rows = 1
        elif width <= 0:
            n_rows = count
        else:
            n_rows = int(round(math.sqrt(count * height / width)))
    n_rows = int(min(max(n_rows, 1), count))
    if height > 0:
        row = np.floor((ys - ys.min()) / height * n_rows).astype(int)
        row = np.clip(row, 0, n_rows - 1)
    else:
        row = np.zeros(count, dtype=int)
    along = np.where(row % 2 == 0, xs, -xs)
    # lexsort: last key is primary; it is stable, so ties keep input order.
    order = np.lexsort((along, row))
    return np.concatenate([located_idx[order], unlocated_idx])


def _systematic_draw(
    pi_in_order: np.ndarray, n: int, rng: np.random.Generator
) -> tuple[np.ndarray, float]:
    """Positions hit by ``n`` systematic points ``u + k``; also returns ``u``.

    ``pi_in_order`` must be < 1 everywhere and sum to ``n`` (rounding aside).
    """
    cumulative = np.cumsum(pi_in_order)
    cumulative *= n / cumulative[-1]  # remove rounding drift: the line ends at n exactly
    cumulative[-1] = n
    start = float(rng.random())
    points = start + np.arange(n)
    hits = np.searchsorted(cumulative, points, side="right")
    hits = np.minimum(hits, pi_in_order.size - 1)
    return hits, start


def _sampford_draw(pi: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of a Sampford sample of size ``n`` (all ``pi`` < 1, summing to ``n``).

    Conditional Poisson sampling with probabilities ``pi`` has design
    ``p(s) ∝ Π_s pi/(1-pi)``; accepting such a sample with probability
    ``(n - Σ_s pi) / n`` turns it into Sampford's design, whose inclusion
    probabilities are exactly ``pi``.
    """
    size = pi.size
    # Batches start small (a few trials usually suffice) and double up to a memory cap.
    largest_batch = max(1, min(10_000, _SAMPFORD_BATCH_VALUES // size))
    batch = min(16, largest_batch)
    trials = 0
    while trials < _SAMPFORD_MAX_TRIALS:
        draws = rng.random((batch, size)) < pi
        candidates = np.flatnonzero(draws.sum(axis=1) == n)
        if candidates.size:
            acceptance = (n - draws[candidates] @ pi) / n
            accepted = np.flatnonzero(rng.random(candidates.size) < acceptance)
            if accepted.size:
                return np.flatnonzero(draws[candidates[accepted[0]]])
        trials += batch
        batch = min(2 * batch, largest_batch)
    raise ClusteringInputError(
        f"Sampford's method found no acceptable sample of {n} among {size} clusters after "
        f"{_SAMPFORD_MAX_TRIALS} trials (inclusion probabilities too close to 1). "
        "Use systematic PPS for this stratum, or lower the sample size."
    )


# ---------------------------------------------------------------------------
# Result
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class StratumSummary:
    """Figures of one stratum's draw (one row of :attr:`SelectionResult.summary`)."""

    stratum: Hashable
    n_units: int
    sample_size: int
    total_size: float
    interval: float
    n_certainty: int
    sum_pi: float
    n_selected: int
    n_replacements: int
    random_start: float


@dataclass(frozen=True)
class SelectionResult:
    """Outcome of :meth:`PsuSelector.fit`; arrays follow the input order.

    Attributes
    ----------
    pi : ndarray of float, shape (N,)
        Inclusion probability of every unit in the main sample.
    selected : ndarray of bool
        True for units of the main sample.
    certainty : ndarray of bool
        True for certainty units (``pi == 1``, taken for sure).
    selection_order : ndarray of int
        ``1..n_h`` within each stratum for the main sample, in the stratum's
        (serpentine) list order; ``n_h + rank`` for replacements; ``0`` for
        units not drawn.
    replacement : ndarray of int
        ``0`` for the main sample, ``1..r`` replacement rank, ``-1`` for units
        not drawn.
    strata : ndarray of object
        Stratum label of every unit (``"all"`` when no strata were given).
    sizes : ndarray of float or None
        The measures of size used (None for SRS without sizes).
    method : str
        ``"systematic"``, ``"srs"`` or ``"sampford"``.
    seed : int or None
        Seed of the generator (when none was given, one in ``[0, 2**31)`` is
        drawn from the OS, so any sample can be reproduced); None when a
        Generator was passed.
    """

    pi: np.ndarray
    selected: np.ndarray
    certainty: np.ndarray
    selection_order: np.ndarray
    replacement: np.ndarray
    strata: np.ndarray
    sizes: np.ndarray | None
    method: str
    seed: int | None
    stratum_summaries: tuple = field(default=())

    @property
    def design_weight(self) -> np.ndarray:
        """``1 / pi``; NaN where ``pi == 0`` (a unit that cannot be selected)."""
        with np.errstate(divide="ignore"):
            return np.where(self.pi > 0, 1.0 / np.where(self.pi > 0, self.pi, 1.0), np.nan)

    @property
    def n_selected(self) -> int:
        """Size of the main sample over all strata."""
        return int(self.selected.sum())

    @property
    def n_replacements_selected(self) -> int:
        """Number of replacement units over all strata."""
        return int((self.replacement > 0).sum())

    @property
    def summary(self) -> pd.DataFrame:
        """One row per stratum.

        Columns: ``stratum``, ``n_units`` (clusters in the frame),
        ``sample_size`` (n), ``total_size``, ``interval`` (sampling interval
        after removing certainty units: ``total_rem / n_rem`` in size units,
        or ``N / n`` for SRS), ``n_certainty``, ``sum_pi`` (equals n),
        ``n_selected``, ``n_replacements`` and ``random_start`` (systematic
        PPS: start ``u * interval`` in size units; NaN otherwise).
        """
        columns = list(StratumSummary.__dataclass_fields__)
        rows = [[getattr(s, c) for c in columns] for s in self.stratum_summaries]
        return pd.DataFrame(rows, columns=columns)

    def to_frame(self) -> pd.DataFrame:
        """Per-unit table in input order (``size`` is NaN for SRS without sizes)."""
        sizes = self.sizes if self.sizes is not None else np.full(self.pi.size, np.nan)
        return pd.DataFrame(
            {
                "stratum": self.strata,
                "size": sizes,
                "pi": self.pi,
                "design_weight": self.design_weight,
                "selected": self.selected,
                "certainty": self.certainty,
                "selection_order": self.selection_order,
                "replacement": self.replacement,
            }
        )


# ---------------------------------------------------------------------------
# Selector
# ---------------------------------------------------------------------------


class PsuSelector:
    """Stratified selection of PSUs with exact inclusion probabilities.

    Parameters
    ----------
    sample_size : int or mapping
        Number of PSUs per stratum: one integer for every stratum, or a
        mapping ``{stratum label: n}`` covering every stratum of the frame.
    method : {"systematic", "srs", "sampford"}, default "systematic"
        Systematic PPS with serpentine ordering, simple random sampling, or
        Sampford's PPS (see the module docstring).
    n_replacements : int, default 0
        Replacement PSUs per stratum, drawn among the units not selected.
    random_state : int, numpy.random.Generator or None
        Seed or generator. None draws a seed from the OS and records it in
        :attr:`SelectionResult.seed`.
    n_rows : int, optional
        Bands of the serpentine ordering per stratum (default: automatic,
        see :func:`serpentine_order`).

    Examples
    --------
    >>> result = PsuSelector(2, random_state=1).fit([10, 20, 30, 40, 50])
    >>> float(result.pi.sum()), result.n_selected
    (2.0, 2)
    """

    def __init__(
        self,
        sample_size: SampleSize,
        *,
        method: str = "systematic",
        n_replacements: int = 0,
        random_state: int | np.random.Generator | None = None,
        n_rows: int | None = None,
    ) -> None:
        self.sample_size = sample_size
        self.method = method
        self.n_replacements = n_replacements
        self.random_state = random_state
        self.n_rows = n_rows

    # -- validation ---------------------------------------------------------

    def _validate_params(self) -> None:
        if self.method not in METHODS:
            raise ClusteringInputError(
                f"Unknown selection method {self.method!r}; use one of {', '.join(METHODS)}."
            )
        sizes = (
            self.sample_size.values()
            if isinstance(self.sample_size, Mapping)
            else [self.sample_size]
        )
        for value in sizes:
            _as_count(value, "sample size", minimum=1)
        _as_count(self.n_replacements, "number of replacements", minimum=0)
        if self.n_rows is not None:
            _as_count(self.n_rows, "number of serpentine rows", minimum=1)

    def _validate_data(self, sizes, strata, x, y):
        if sizes is None and self.method != "srs":
            raise ClusteringInputError(
                f"{METHOD_LABELS[self.method]} needs a measure of size for every cluster; "
                "give the sizes (e.g. the cluster population) or choose simple random sampling."
            )
        n_units = None
        if sizes is not None:
            sizes = np.asarray(sizes, dtype=float).ravel()
            n_units = sizes.size
        if strata is not None:
            strata = _as_object_array(strata)
            n_units = _check_length(n_units, strata.size, "strata")
        if (x is None) != (y is None):
            raise ClusteringInputError("Give both x and y coordinates, or neither.")
        if x is not None:
            x = np.asarray(x, dtype=float).ravel()
            y = np.asarray(y, dtype=float).ravel()
            n_units = _check_length(n_units, x.size, "x")
            n_units = _check_length(n_units, y.size, "y")
        if n_units is None:
            raise ClusteringInputError(
                "Nothing to select from: give the sizes or the strata of the clusters."
            )
        if n_units == 0:
            raise ClusteringInputError(
                "The sampling frame is empty: the cluster layer has no features. "
                "Select PSUs from a layer that has clusters."
            )
        if sizes is not None and self.method != "srs":
            missing = int(np.isnan(sizes).sum())
            if missing:
                raise ClusteringInputError(
                    f"{missing} cluster(s) have no size (NULL/NaN). Fill the size field for every "
                    "cluster, or remove those clusters from the layer before selecting."
                )
            bad = int((~np.isfinite(sizes) | (sizes <= 0)).sum())
            if bad:
                raise ClusteringInputError(
                    f"{bad} cluster(s) have a size that is zero, negative or infinite; PPS "
                    "needs a positive size for every cluster (a cluster of size 0 could never be "
                    "selected). Remove or merge those clusters, or use simple random sampling."
                )
        if strata is None:
            strata = np.full(n_units, SINGLE_STRATUM, dtype=object)
        else:
            missing = int(pd.isna(strata).sum())
            if missing:
                raise ClusteringInputError(
                    f"{missing} cluster(s) have no stratum (NULL). Fill the stratum field for "
                    "every cluster, or remove those clusters before selecting."
                )
        return sizes, strata, x, y, n_units

    def _sample_sizes(self, labels: list) -> dict:
        if not isinstance(self.sample_size, Mapping):
            n = _as_count(self.sample_size, "sample size", minimum=1)
            return {label: n for label in labels}
        given = {key: _as_count(v, "sample size", minimum=1) for key, v in self.sample_size.items()}
        absent = [key for key in given if key not in set(labels)]
        if absent:
            raise ClusteringInputError(
                f"Sample sizes are given for stratum/strata {_names(absent)} that have no clusters "
                "in the frame. Correct the stratum names in the sample size table (they must match "
                "the stratum field exactly), or remove those rows."
            )
        lacking = [label for label in labels if label not in given]
        if lacking:
            raise ClusteringInputError(
                f"No sample size is given for stratum/strata {_names(lacking)}. Add them to the "
                "sample sizes, or remove their clusters from the layer."
            )
        return {label: given[label] for label in labels}

    # -- fit ------------------------------------------------------------------

    def fit(
        self,
        sizes: Sequence[float] | np.ndarray | None = None,
        *,
        strata: Sequence[Hashable] | np.ndarray | None = None,
        x: Sequence[float] | np.ndarray | None = None,
        y: Sequence[float] | np.ndarray | None = None,
    ) -> SelectionResult:
        """Draw the sample.

        Parameters
        ----------
        sizes : array-like of shape (N,), optional
            Measure of size of every cluster (positive). Required for the PPS
            methods; for SRS only reported.
        strata : array-like of shape (N,), optional
            Stratum label of every cluster; None means one stratum (``"all"``).
        x, y : array-like of shape (N,), optional
            Cluster coordinates (e.g. centroids) for the serpentine ordering;
            without them the input order is the list order.

        Returns
        -------
        SelectionResult

        Raises
        ------
        ClusteringInputError
            Bad parameters or data; the message names the problem and the fix.
        """
        self._validate_params()
        sizes, strata, x, y, n_units = self._validate_data(sizes, strata, x, y)
        labels = _sorted_labels(strata)
        sample_sizes = self._sample_sizes(labels)
        n_replacements = _as_count(self.n_replacements, "number of replacements", minimum=0)
        position = {label: i for i, label in enumerate(labels)}
        codes = np.fromiter((position[v] for v in strata), dtype=int, count=n_units)
        members = {label: np.flatnonzero(codes == i) for i, label in enumerate(labels)}
        for label in labels:
            available = members[label].size
            needed = sample_sizes[label] + n_replacements
            if needed > available:
                what = f"{sample_sizes[label]} PSU(s)" + (
                    f" plus {n_replacements} replacement(s)" if n_replacements else ""
                )
                raise ClusteringInputError(
                    f"Stratum {label!r} has {available} cluster(s) but {what} were requested. "
                    "Lower the sample size (or replacements) for this stratum, or form smaller "
                    "clusters so that it has more."
                )

        rng, seed = _generator(self.random_state)
        pi = np.zeros(n_units)
        selected = np.zeros(n_units, dtype=bool)
        certainty = np.zeros(n_units, dtype=bool)
        selection_order = np.zeros(n_units, dtype=int)
        replacement = np.full(n_units, -1, dtype=int)
        summaries = []
        for label in labels:
            index = members[label]
            if x is not None:
                index = index[serpentine_order(x[index], y[index], self.n_rows)]
            stratum_sizes = sizes[index] if sizes is not None else None
            draw = _draw_stratum(
                stratum_sizes, index.size, sample_sizes[label], n_replacements, self.method, rng
            )
            pi[index] = draw.pi
            certainty[index] = draw.certainty
            selected[index[draw.main]] = True
            replacement[index[draw.main]] = 0
            # main positions are in list order, so numbering them gives the list order
            selection_order[index[draw.main]] = np.arange(1, draw.main.size + 1)
            replacement[index[draw.replacements]] = np.arange(1, draw.replacements.size + 1)
            selection_order[index[draw.replacements]] = draw.main.size + np.arange(
                1, draw.replacements.size + 1
            )
            total_size = float(np.nansum(stratum_sizes)) if stratum_sizes is not None else math.nan
            summaries.append(
                StratumSummary(
                    stratum=label,
                    n_units=int(index.size),
                    sample_size=int(sample_sizes[label]),
                    total_size=total_size,
                    interval=draw.interval,
                    n_certainty=int(draw.certainty.sum()),
                    sum_pi=float(draw.pi.sum()),
                    n_selected=int(draw.main.size),
                    n_replacements=int(draw.replacements.size),
                    random_start=draw.random_start,
                )
            )
        return SelectionResult(
            pi=pi,
            selected=selected,
            certainty=certainty,
            selection_order=selection_order,
            replacement=replacement,
            strata=strata,
            sizes=sizes,
            method=self.method,
            seed=seed,
            stratum_summaries=tuple(summaries),
        )


def select_pps(
    sizes: Sequence[float] | np.ndarray | None,
    n: SampleSize,
    *,
    strata: Sequence[Hashable] | np.ndarray | None = None,
    x: Sequence[float] | np.ndarray | None = None,
    y: Sequence[float] | np.ndarray | None = None,
    method: str = "systematic",
    n_replacements: int = 0,
    random_state: int | np.random.Generator | None = None,
) -> SelectionResult:
    """Shortcut for ``PsuSelector(n, ...).fit(sizes, strata=..., x=..., y=...)``."""
    selector = PsuSelector(
        n, method=method, n_replacements=n_replacements, random_state=random_state
    )
    return selector.fit(sizes, strata=strata, x=x, y=y)


def sample_sizes_from_column(
    strata: Sequence[Hashable] | np.ndarray, values: Sequence[Any]
) -> dict:
    """Per-stratum sample sizes read from a column repeated on every cluster.

    Parameters
    ----------
    strata : array-like of shape (N,)
        Stratum label of every cluster.
    values : array-like of shape (N,)
        Sample size of the cluster's stratum (same value on every cluster of
        a stratum).

    Returns
    -------
    dict
        ``{stratum label: n}``.

    Raises
    ------
    ClusteringInputError
        When a value is missing or not a whole number >= 1, or differs
        within a stratum.
    """
    strata = _as_object_array(strata)
    values = _as_object_array(values)
    if strata.size != values.size:
        raise ClusteringInputError("The sample size column and the strata differ in length.")
    result: dict = {}
    for label, value in zip(strata, values):
        if pd.isna(label):
            continue  # reported by the selector, with the count
        if value is None or pd.isna(value):
            raise ClusteringInputError(
                f"A cluster of stratum {label!r} has no sample size (NULL) in the sample size "
                "field. Fill the field for every cluster (the same value within a stratum)."
            )
        n = _as_count(value, f"sample size of stratum {label!r}", minimum=1)
        if result.setdefault(label, n) != n:
            raise ClusteringInputError(
                f"The sample size field holds different values ({result[label]} and {n}) within "
                f"stratum {label!r}. Give every cluster of a stratum the same sample size, or use "
                "a sample size table with one row per stratum."
            )
    return result


# ---------------------------------------------------------------------------
# Per-stratum draw
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _StratumDraw:
    pi: np.ndarray  # in list order
    certainty: np.ndarray  # in list order
    main: np.ndarray  # sorted positions (list order) of the main sample
    replacements: np.ndarray  # positions, by replacement rank
    interval: float
    random_start: float


def _draw_stratum(
    sizes: np.ndarray | None,
    count: int,
    n: int,
    n_replacements: int,
    method: str,
    rng: np.random.Generator,
) -> _StratumDraw:
    """Draw one stratum whose units are already in list (serpentine) order."""
    main, pi, certainty, interval, start = _draw(sizes, n, method, rng, count)
    replacements = np.empty(0, dtype=int)
    if n_replacements:
        rest = np.setdiff1d(np.arange(count), main)
        rest_sizes = sizes[rest] if sizes is not None else None
        picked, *_ = _draw(rest_sizes, n_replacements, method, rng, rest.size)
        replacements = rest[picked][rng.permutation(picked.size)]
    return _StratumDraw(pi, certainty, np.sort(main), replacements, interval, start)


def _draw(sizes, n, method, rng, count):
    """Main draw of ``n`` among ``count`` units in list order.

    Returns ``(positions, pi, certainty, interval, random_start)``.
    """
    if method == "srs":
        pi = np.full(count, n / count)
        certainty = pi >= 1.0
        positions = rng.choice(count, size=n, replace=False)
        return np.sort(positions), pi, certainty, count / n, math.nan
    pi, certainty = inclusion_probabilities(sizes, n)
    rest = np.flatnonzero(~certainty)
    n_remaining = n - int(certainty.sum())
    interval = float(sizes[rest].sum()) / n_remaining if n_remaining > 0 else math.nan
    start = math.nan
    chosen = np.flatnonzero(certainty)
    if n_remaining > 0:
        if method == "systematic":
            hits, u = _systematic_draw(pi[rest], n_remaining, rng)
            start = u * interval
        else:
            hits = _sampford_draw(pi[rest], n_remaining, rng)
        chosen = np.concatenate([chosen, rest[hits]])
    return np.sort(chosen), pi, certainty, interval, start


# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------


def selection_report_html(result: SelectionResult, *, title: str = "PSU selection") -> str:
    """A self-contained HTML page summarising the draw per stratum.

    Holds the method, the seed, a per-stratum table (clusters, n, total
    size, interval, certainty units, sum of pi, replacements, random start)
    and an inline SVG bar chart of the sample size per stratum, with the
    certainty units marked.
    """
    summary = result.summary
    esc = html.escape
    rows = []
    for record in summary.itertuples(index=False):
        rows.append(
            "<tr>"
            f"<td>{esc(str(record.stratum))}</td>"
            f"<td>{record.n_units}</td>"
            f"<td>{record.sample_size}</td>"
            f"<td>{_fmt(record.total_size)}</td>"
            f"<td>{_fmt(record.interval)}</td>"
            f"<td>{record.n_certainty}</td>"
            f"<td>{_fmt(record.sum_pi, 6)}</td>"
            f"<td>{record.n_replacements}</td>"
            f"<td>{_fmt(record.random_start)}</td>"
            "</tr>"
        )
    totals = (
        "<tr class='total'><td>Total</td>"
        f"<td>{int(summary.n_units.sum())}</td><td>{int(summary.sample_size.sum())}</td>"
        f"<td>{_fmt(summary.total_size.sum(min_count=1))}</td><td></td>"
        f"<td>{int(summary.n_certainty.sum())}</td><td>{_fmt(summary.sum_pi.sum(), 6)}</td>"
        f"<td>{int(summary.n_replacements.sum())}</td><td></td></tr>"
    )
    weights = result.design_weight[result.selected]
    weight_text = (
        f"Design weights (1/pi) of the main sample range from {_fmt(np.nanmin(weights))} "
        f"to {_fmt(np.nanmax(weights))}."
        if weights.size
        else ""
    )
    seed = "not recorded (a generator was passed)" if result.seed is None else str(result.seed)
    interval_note = (
        "number of clusters / n"
        if result.method == "srs"
        else "total size / n after removing certainty units"
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
th, td {{ border: 1px solid #bbb; padding: 0.25em 0.6em; text-align: right; }}
th {{ background: #eee; }} td:first-child {{ text-align: left; }}
tr.total td {{ font-weight: bold; }}
p.note {{ max-width: 48em; }}
</style></head><body>
<h1>{esc(title)}</h1>
<p>Method: <b>{esc(METHOD_LABELS[result.method])}</b>. Seed: <b>{esc(seed)}</b>
(the same seed and the same layer give the same sample).
Main sample: <b>{result.n_selected}</b> PSU(s);
replacements: <b>{result.n_replacements_selected}</b>.</p>
<table>
<tr><th>Stratum</th><th>Clusters (N)</th><th>Sample size (n)</th><th>Total size</th>
<th>Interval</th><th>Certainty units</th><th>Sum of pi</th><th>Replacements</th>
<th>Random start</th></tr>
{"".join(rows)}
{totals}
</table>
<p class="note">Interval: {esc(interval_note)}. Certainty units have a size of at least
the interval; they are taken with probability 1 and the interval is recomputed on the other
clusters. The sum of pi equals n in every stratum. {esc(weight_text)}
Replacement PSUs carry their main-sample pi and weight; using one changes the design, so record
every substitution and treat it as non-response when weighting.</p>
{_sample_size_chart_svg(summary)}
</body></html>
"""


def _sample_size_chart_svg(summary: pd.DataFrame) -> str:
    """Horizontal bars: sample size per stratum, certainty units in a darker shade."""
    if summary.empty:
        return ""
    bar_height, gap, label_width, plot_width = 18, 6, 160, 420
    largest = max(int(summary.sample_size.max()), 1)
    height = len(summary) * (bar_height + gap) + 40
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{label_width + plot_width + 60}" '
        f'height="{height}" role="img" aria-label="Sample size per stratum">',
        '<text x="0" y="14" font-size="13" font-weight="bold">Sample size per stratum '
        "(dark: certainty units)</text>",
    ]
    for i, record in enumerate(summary.itertuples(index=False)):
        top = 26 + i * (bar_height + gap)
        full = plot_width * record.sample_size / largest
        sure = plot_width * record.n_certainty / largest
        label = html.escape(str(record.stratum))[:28]
        parts += [
            f'<text x="{label_width - 6}" y="{top + 13}" font-size="12" '
            f'text-anchor="end">{label}</text>',
            f'<rect x="{label_width}" y="{top}" width="{full:.1f}" height="{bar_height}" '
            'fill="#8fb8de"/>',
            f'<rect x="{label_width}" y="{top}" width="{sure:.1f}" height="{bar_height}" '
            'fill="#2b5d8a"/>',
            f'<text x="{label_width + full + 4:.1f}" y="{top + 13}" font-size="12">'
            f"{record.sample_size}</text>",
        ]
    parts.append("</svg>")
    return "\n".join(parts)


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------


def _fmt(value: float, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{value:,.{digits}f}"


def _as_count(value: Any, what: str, *, minimum: int) -> int:
    """``value`` as an int >= minimum, accepting integral floats (e.g. 3.0 from a field)."""
    if isinstance(value, (bool, np.bool_)):
        raise ClusteringInputError(f"The {what} must be a whole number, not {value!r}.")
    if isinstance(value, (int, np.integer)):  # exact, even beyond 2**53
        if value < minimum:
            raise ClusteringInputError(
                f"The {what} must be at least {minimum}, not {int(value)}. Correct it."
            )
        return int(value)
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ClusteringInputError(
            f"The {what} must be a whole number, not {value!r}. Correct it."
        ) from None
    if not math.isfinite(number) or number != int(number):
        raise ClusteringInputError(f"The {what} must be a whole number, not {value!r}. Correct it.")
    if number < minimum:
        raise ClusteringInputError(
            f"The {what} must be at least {minimum}, not {int(number)}. Correct it."
        )
    return int(number)


def _as_object_array(values) -> np.ndarray:
    array = np.empty(len(values), dtype=object)
    array[:] = list(values)
    return array


def _check_length(expected: int | None, actual: int, what: str) -> int:
    if expected is not None and actual != expected:
        raise ClusteringInputError(
            f"{what} has {actual} value(s) but the sizes/strata have {expected}; "
            "give one value per cluster."
        )
    return actual


def _sorted_labels(strata: np.ndarray) -> list:
    """Distinct labels, sorted; text that all reads as numbers sorts numerically ("2" < "10")."""
    labels = list(pd.unique(strata))
    try:
        return sorted(labels, key=float)
    except (TypeError, ValueError):
        pass
    try:
        return sorted(labels)
    except TypeError:  # mixed types: sort by text
        return sorted(labels, key=str)


def _names(labels: list) -> str:
    shown = ", ".join(repr(label) for label in labels[:10])
    return shown + (f" and {len(labels) - 10} more" if len(labels) > 10 else "")


def _generator(random_state) -> tuple[np.random.Generator, int | None]:
    if isinstance(random_state, np.random.Generator):
        return random_state, None
    if random_state is None:
        # 31 bits, so the seed fits any integer field or parameter (QGIS's is 32-bit signed)
        seed = int(np.random.SeedSequence().generate_state(1)[0] >> 1)
    else:
        seed = _as_count(random_state, "random seed", minimum=0)
    return np.random.default_rng(seed), seed
