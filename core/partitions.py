"""Cluster each stratum (partition) on its own, so no cluster crosses a boundary.

Survey designs stratify: clusters (PSUs) must never straddle a stratum or an
administrative boundary, and each stratum may have its own targets (urban
areas a 1 km radius, rural ones 2 km, say). :func:`cluster_partitions` splits
the units by their partition value, fits one estimator per partition with the
partition's own parameters, and puts the results back together.

Determinism: each partition's seed is derived from ``random_state`` and the
partition value (:func:`partition_seed`), never from the order in which
partitions run. A partition therefore gives the same clusters whether it runs
alone, in a thread pool of any size, on a Dask worker or in an AWS Lambda.

Failure isolation: a partition that raises (bad data, say) is recorded with
its name and message, its units get no cluster and the status ``"failed"``,
and every other partition's result is kept. The caller decides whether to
raise (:meth:`PartitionedResult.raise_for_failures`). Only cancellation
(:class:`ClusteringCancelled`) stops the whole run.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
import zlib
from collections.abc import Callable, Hashable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .errors import ClusteringCancelled, ClusteringInputError

STATUS_OK = "ok"
STATUS_FAILED = "failed"

# Seeds stay in numpy's legacy RandomState range (0 .. 2**32 - 1).
_SEED_MODULUS = 2**32

_SUMMARY_COLUMNS = [
    "partition",
    "n_units",
    "weight",
    "n_clusters",
    "seconds",
    "status",
    "error",
    "seed",
]


def _default_estimator_factory(**params: Any) -> Any:
    # Imported late: the engine pulls in scipy.
    from .tuned import TunedClustering

    return TunedClustering(**params)


def partition_name(partition: Hashable) -> str:
    """The text that names a partition in cluster IDs, tables and reports.

    Integral floats (``1102305007.0``, as a partition read from a float
    column) are named like the integer, so the name does not depend on how a
    file format stored the column.
    """
    if isinstance(partition, (float, np.floating)) and float(partition).is_integer():
        return str(int(partition))
    if isinstance(partition, bytes):
        return partition.decode("utf-8", errors="replace")
    return str(partition)


def partition_seed(random_state: int | None, partition: Hashable) -> int | None:
    """Seed of one partition, from the run's seed and the partition's name.

    ``zlib.crc32`` of the name is stable across processes, machines and
    Python versions (unlike ``hash``), so every executor derives the same
    seed. ``None`` (an unseeded run) stays ``None``.
    """
    if random_state is None:
        return None
    name = partition_name(partition)
    return (int(random_state) + zlib.crc32(name.encode("utf-8"))) % _SEED_MODULUS


def prefixed_cluster_ids(partition: Hashable, cluster_ids: Sequence[Any]) -> np.ndarray:
    """``f"{partition}/{cluster_id}"`` for each ID; empty IDs stay empty."""
    prefix = partition_name(partition)
    return np.array(
        [f"{prefix}/{cid}" if cid not in (None, "") else cid for cid in cluster_ids],
        dtype=object,
    )


@dataclass
class PartitionOutcome:
    """What happened to one partition.

    Attributes
    ----------
    partition : hashable
        The partition value as given.
    name : str
        :func:`partition_name` of the value; the prefix of its cluster IDs.
    status : {"ok", "failed"}
    error : str or None
        ``"<ExceptionType>: message"`` when the partition failed.
    seconds : float
        Wall time of the fit.
    n_units : int
    weight : float
        Total weight of the partition's units.
    seed : int or None
        The seed its estimator got (:func:`partition_seed`).
    params : dict
        The estimator parameters actually used (fallback merged with overrides).
    result : ClusteringResult or None
        The engine's result, with unprefixed cluster IDs; None when failed.
    """

    partition: Hashable
    name: str
    status: str
    error: str | None
    seconds: float
    n_units: int
    weight: float
    seed: int | None
    params: dict[str, Any] = field(default_factory=dict)
    result: Any = None

    @property
    def n_clusters(self) -> int:
        return 0 if self.result is None else int(self.result.n_clusters)

    @property
    def ok(self) -> bool:
        return self.status == STATUS_OK

    def summary(self) -> dict[str, Any]:
        """One row of :attr:`PartitionedResult.partitions`."""
        return {
            "partition": self.partition,
            "n_units": self.n_units,
            "weight": self.weight,
            "n_clusters": self.n_clusters,
            "seconds": self.seconds,
            "status": self.status,
            "error": self.error,
            "seed": self.seed,
        }


@dataclass
class PartitionedResult:
    """Clusters of all partitions, one row per input unit in input order.

    Per unit only two small integer arrays are stored (the cluster row and
    the partition index); the per-unit IDs, passes, statuses and partition
    values are made from them and the tables when asked for, so a country of
    millions of units costs a few bytes per unit, not several Python objects.

    Attributes
    ----------
    labels : ndarray of int32, shape (n,)
        Row of the unit's cluster in :attr:`clusters`; -1 for units of a
        failed partition.
    clusters : DataFrame
        One row per cluster: ``partition`` then the engine's columns
        (cluster_id, weight, radius_m, n_units, pass, centre_x, centre_y...).
    trials : DataFrame
        The engine's trials, with a ``partition`` column first.
    partitions : DataFrame
        One row per partition: partition, n_units, weight, n_clusters,
        seconds, status, error, seed. Sorted by partition.
    outcomes : dict
        :class:`PartitionOutcome` per partition value, for callers that need
        the engine's own result objects.
    partition_values : list
        The distinct partition values, sorted (``[None]`` without partitions).
    partition_codes : ndarray of int32, shape (n,), or None
        Index of each unit's partition into :attr:`partition_values` (None
        without partitions: every unit is in the one partition).

    Per-unit views (made on access): :attr:`cluster_ids`,
    :attr:`cluster_pass`, :attr:`status`, :attr:`unit_partitions`.
    """

    labels: np.ndarray
    clusters: pd.DataFrame
    trials: pd.DataFrame
    partitions: pd.DataFrame
    outcomes: dict[Hashable, PartitionOutcome]
    partition_values: list[Hashable] = field(default_factory=lambda: [None])
    partition_codes: np.ndarray | None = None
    # Units whose ID or pass the cluster table cannot give (estimators other
    # than the engine): (rows, ids, passes) per partition.
    unit_fallbacks: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = field(
        default_factory=list, repr=False
    )

    def _codes(self) -> np.ndarray:
        if self.partition_codes is not None:
            return self.partition_codes
        return np.zeros(self.labels.shape[0], dtype=np.int32)

    @property
    def cluster_ids(self) -> np.ndarray:
        """ndarray of object, shape (n,): ``"<partition>/CLUSTER_001"``; None without cluster.

        Units share the ID strings of :attr:`clusters` (a pointer per unit).
        """
        table_ids = self.clusters["cluster_id"].to_numpy(dtype=object)
        ids = np.append(table_ids, None).astype(object)[self.labels]
        for rows, unit_ids, _ in self.unit_fallbacks:
            ids[rows] = unit_ids
        return ids

    @property
    def cluster_pass(self) -> np.ndarray:
        """ndarray of int64, shape (n,): the pass that made the unit's cluster; 0 without one."""
        if "pass" in self.clusters.columns and len(self.clusters):
            table_pass = self.clusters["pass"].to_numpy(dtype=np.int64)
        else:
            table_pass = np.zeros(len(self.clusters), dtype=np.int64)
        passes = np.append(table_pass, 0)[self.labels]
        for rows, _, unit_passes in self.unit_fallbacks:
            passes[rows] = unit_passes
        return passes

    @property
    def status(self) -> np.ndarray:
        """ndarray of object, shape (n,): ``"ok"`` or ``"failed"``, the unit's partition status."""
        per_partition = np.empty(len(self.partition_values), dtype=object)
        per_partition[:] = [
            STATUS_OK if self.outcomes[key].ok else STATUS_FAILED for key in self.partition_values
        ]
        return per_partition[self._codes()]

    @property
    def unit_partitions(self) -> np.ndarray:
        """ndarray of object, shape (n,): each unit's partition value (one object per partition)."""
        values = np.empty(len(self.partition_values), dtype=object)
        for index, value in enumerate(self.partition_values):
            values[index] = value  # item by item: a tuple value stays one object
        return values[self._codes()]

    @property
    def n_clusters(self) -> int:
        return int(len(self.clusters))

    @property
    def failed(self) -> dict[Hashable, str]:
        """Error message per failed partition."""
        return {key: out.error or "" for key, out in self.outcomes.items() if not out.ok}

    @property
    def failed_share(self) -> float:
        return len(self.failed) / len(self.outcomes) if self.outcomes else 0.0

    def raise_for_failures(self, max_failed_share: float = 0.0) -> None:
        """Raise :class:`ClusteringInputError` if more partitions failed than tolerated.

        Parameters
        ----------
        max_failed_share : float
            Largest tolerated share of failed partitions (0 = none may fail).
        """
        failed = self.failed
        if failed_share_exceeded(len(failed), len(self.outcomes), max_failed_share):
            listed = "; ".join(
                f"{partition_name(key)}: {message}" for key, message in list(failed.items())[:10]
            )
            more = f" (and {len(failed) - 10} more)" if len(failed) > 10 else ""
            raise ClusteringInputError(
                f"{len(failed)} of {len(self.outcomes)} partitions failed{more}: {listed}. "
                "Fix the data or the parameters of these partitions, or tolerate a larger "
                "share of failed partitions."
            )


# ---------------------------------------------------------------------------
# Input checks
# ---------------------------------------------------------------------------


def _as_xy(xy: Any) -> np.ndarray:
    arr = np.asarray(xy, dtype=float)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ClusteringInputError(
            f"xy must have shape (n, 2) (metric x, y per unit), got {arr.shape}. "
            "Pass one row of projected coordinates per unit."
        )
    return arr


def _missing_partition_mask(values: np.ndarray) -> np.ndarray:
    missing = np.asarray(pd.isna(values), dtype=bool)
    if values.dtype == object:
        blank = np.fromiter(
            (isinstance(v, str) and not v.strip() for v in values), dtype=bool, count=len(values)
        )
        missing |= blank
    return missing


def _partition_values(partitions: Any, n: int) -> np.ndarray:
    values = np.asarray(partitions)
    if values.dtype.kind in "US":  # fixed-width strings: keep python str objects
        values = values.astype(object)
    if values.ndim != 1 or values.shape[0] != n:
        raise ClusteringInputError(
            f"partitions must have one value per unit ({n}), got shape {values.shape}. "
            "Pass the partition (stratum) field's value for every unit."
        )
    _refuse_missing(int(_missing_partition_mask(values).sum()), n)
    return values


def _refuse_missing(count: int, n: int) -> None:
    if count:
        raise ClusteringInputError(
            f"{count} of {n} units have no partition value (NULL, NaN or empty). "
            "Fill the partition field for these units, drop them before clustering, "
            "or cluster without partitions."
        )


def _sorted_keys(uniques: Sequence[Hashable]) -> np.ndarray:
    """Rank of each of ``uniques`` in sorted order (by name if their types do not compare)."""
    uniques = list(uniques)
    try:
        order = sorted(range(len(uniques)), key=lambda i: uniques[i])
    except TypeError:  # mixed types: sort by name
        order = sorted(range(len(uniques)), key=lambda i: partition_name(uniques[i]))
    rank = np.empty(len(uniques), dtype=np.int32)
    rank[order] = np.arange(len(uniques), dtype=np.int32)
    return rank


def _partition_codes(partitions: Any, n: int) -> tuple[list[Hashable], np.ndarray]:
    """Distinct partition values (sorted) and each unit's index into them (int32).

    A ``pandas.Categorical`` is taken as it is (its codes, its categories
    that some unit uses): a compact way to pass millions of units.
    """
    if isinstance(partitions, pd.Categorical):
        if len(partitions) != n:
            raise ClusteringInputError(
                f"partitions must have one value per unit ({n}), got {len(partitions)}. "
                "Pass the partition (stratum) field's value for every unit."
            )
        codes = np.asarray(partitions.codes)
        categories = np.asarray(partitions.categories, dtype=object)
        _refuse_missing(int(np.count_nonzero(codes < 0)), n)
        counts = np.bincount(codes, minlength=len(categories))
        used = np.flatnonzero(counts)
        _refuse_missing(int(counts[used][_missing_partition_mask(categories[used])].sum()), n)
        uniques = categories[used].tolist()
        rank = _sorted_keys(uniques)
        # One lookup from category code to sorted key: one array per unit, made once.
        code_to_key = np.full(len(categories), -1, dtype=np.int32)
        code_to_key[used] = rank
        unit_keys = code_to_key[codes]
    else:
        values = _partition_values(partitions, n)
        factorized, found = pd.factorize(values, sort=False)
        # tolist: Python values (int, str), as the partition field gave them
        uniques = found.tolist() if isinstance(found, np.ndarray) else list(found)
        rank = _sorted_keys(uniques)
        unit_keys = rank[factorized]
    keys: list[Hashable] = [None] * len(uniques)
    for index, position in enumerate(rank.tolist()):
        keys[position] = uniques[index]
    return keys, unit_keys


def _check_unique_names(keys: Sequence[Hashable]) -> None:
    seen: dict[str, Hashable] = {}
    for key in keys:
        name = partition_name(key)
        if name in seen:
            raise ClusteringInputError(
                f"Partition values {seen[name]!r} and {key!r} have the same name {name!r}, "
                "so their cluster IDs would collide. Use one type for the partition field "
                "(all text or all integers)."
            )
        seen[name] = key


def _rows_by_code(codes: np.ndarray, n_keys: int) -> list[np.ndarray]:
    """The units of each code, in input order (int32 indices when they fit)."""
    index_type = np.int32 if codes.shape[0] < 2**31 else np.int64
    # stable: each partition keeps the input order
    order = np.argsort(codes, kind="stable").astype(index_type, copy=False)
    bounds = np.searchsorted(codes[order], np.arange(n_keys + 1))
    return [order[bounds[i] : bounds[i + 1]] for i in range(n_keys)]


def group_partitions(partitions: Any, n: int) -> tuple[list[Hashable], dict[Hashable, np.ndarray]]:
    """Check partition values and group the units by them.

    Parameters
    ----------
    partitions : array of shape (n,) or pandas.Categorical
        The partition value of every unit.
    n : int
        The number of units.

    Returns
    -------
    keys : list
        The distinct values, sorted (by name if their types do not compare).
    rows_of : dict
        The rows of each partition's units, in input order.

    Raises
    ------
    ClusteringInputError
        A wrong length, NULL/NaN/empty values, or two values with the same
        name (``5`` and ``"5"``).
    """
    keys, _, rows_of = _grouped(partitions, n)
    return keys, rows_of


def _grouped(
    partitions: Any, n: int
) -> tuple[list[Hashable], np.ndarray, dict[Hashable, np.ndarray]]:
    """:func:`group_partitions`, and each unit's index into the keys."""
    keys, codes = _partition_codes(partitions, n)
    _check_unique_names(keys)
    return keys, codes, dict(zip(keys, _rows_by_code(codes, len(keys))))


def _overrides_lookup(
    per_partition_params: Mapping[Hashable, Mapping[str, Any]] | None, keys: Sequence[Hashable]
) -> dict[Hashable, dict[str, Any]]:
    """Overrides per partition value; keys may be given by value or by name."""
    if not per_partition_params:
        return {}
    by_name = {partition_name(key): key for key in keys}
    lookup: dict[Hashable, dict[str, Any]] = {}
    unknown = []
    for given, overrides in per_partition_params.items():
        if given in by_name.values():
            key = given
        elif partition_name(given) in by_name:
            key = by_name[partition_name(given)]
        else:
            unknown.append(given)
            continue
        if not isinstance(overrides, Mapping):
            raise ClusteringInputError(
                f"per_partition_params[{given!r}] must be a dict of parameters, "
                f"got {type(overrides).__name__}."
            )
        lookup[key] = {name: value for name, value in overrides.items() if value is not None}
    if unknown:
        shown = ", ".join(repr(u) for u in unknown[:5])
        raise ClusteringInputError(
            f"per_partition_params names {len(unknown)} partition(s) that no unit has: {shown}. "
            "Use the partition values present in the data as keys."
        )
    return lookup


# ---------------------------------------------------------------------------
# Per-unit keyword arguments of fit (lonlat, adjacency...)
# ---------------------------------------------------------------------------


class PerPartition:
    """A per-unit fit argument made for one partition at a time, e.g. its neighbour graph.

    ``PerPartition(make)`` in ``fit_kwargs`` gives each partition
    ``make(rows)`` (``rows``: the partition's units, ascending). It stands for
    the (n, n) matrix whose ``[rows][:, rows]`` block ``make`` returns, so
    only one partition's matrix is ever in memory, not the whole country's.
    """

    def __init__(self, make: Callable[[np.ndarray], Any]) -> None:
        self.make = make

    def __call__(self, rows: np.ndarray) -> Any:
        return self.make(np.asarray(rows))


def _slice_fit_kwargs(fit_kwargs: Mapping[str, Any], rows: np.ndarray, n: int) -> dict[str, Any]:
    """Restrict per-unit fit arguments to one partition's rows.

    Arrays with one row per unit are sliced by row; square (n, n) matrices
    (dense or scipy.sparse, e.g. an adjacency) keep the partition's rows and
    columns; a :class:`PerPartition` is called with the rows; anything else
    passes through unchanged.
    """
    sliced: dict[str, Any] = {}
    for name, value in fit_kwargs.items():
        if isinstance(value, PerPartition):
            sliced[name] = value(rows)
            continue
        shape = getattr(value, "shape", None)
        if shape is not None and len(shape) >= 1 and shape[0] == n:
            if len(shape) == 2 and shape[1] == n:
                if hasattr(value, "tocsr"):
                    value = value.tocsr()
                sliced[name] = value[rows][:, rows]
            else:
                sliced[name] = value[rows]
        else:
            sliced[name] = value
    return sliced


# ---------------------------------------------------------------------------
# One partition
# ---------------------------------------------------------------------------


def fit_partition(
    xy: Any,
    weights: Any,
    partition: Hashable,
    *,
    params: Mapping[str, Any],
    overrides: Mapping[str, Any] | None = None,
    progress: Callable[..., Any] | None = None,
    is_cancelled: Callable[[], bool] | None = None,
    estimator_factory: Callable[..., Any] | None = None,
    fit_kwargs: Mapping[str, Any] | None = None,
    derive_seed: bool = True,
) -> PartitionOutcome:
    """Fit one partition, recording a failure instead of raising it.

    This is the unit of work every executor runs (threads here, Dask tasks
    and the AWS Lambda handler in ``cli``/``aws``), so all give the same
    clusters.

    Parameters
    ----------
    xy : array of shape (m, 2)
        Metric coordinates of the partition's units.
    weights : array of shape (m,) or None
    partition : hashable
        The partition value; its name seeds the estimator.
    params : dict
        Estimator keyword arguments (fallback for every partition).
    overrides : dict, optional
        This partition's own parameters; they win over ``params``.
    progress, is_cancelled : callable, optional
        Passed to the estimator's ``fit``.
    estimator_factory : callable, optional
        ``factory(**params)`` -> estimator with ``fit(xy, weights, ...)``;
        default :class:`~tuned_grid_clustering.core.TunedClustering`.
    fit_kwargs : dict, optional
        Extra keyword arguments of ``fit`` (already restricted to this partition).
    derive_seed : bool
        Derive the seed from ``random_state`` and the partition name (True),
        or use ``random_state`` as is (a run without partitions).

    Returns
    -------
    PartitionOutcome
        ``status="failed"`` with the error message if anything but
        cancellation went wrong.

    Raises
    ------
    ClusteringCancelled
        When ``is_cancelled`` returns True.
    """
    factory = estimator_factory or _default_estimator_factory
    merged = dict(params)
    merged.update({key: value for key, value in (overrides or {}).items() if value is not None})
    random_state = merged.get("random_state", 42)
    seed = partition_seed(random_state, partition) if derive_seed else random_state
    merged["random_state"] = seed

    xy_arr = np.asarray(xy, dtype=float)
    n_units = int(xy_arr.shape[0]) if xy_arr.ndim else 0
    weight = float(np.nansum(weights)) if weights is not None else float(n_units)
    started = time.perf_counter()
    kwargs: dict[str, Any] = dict(fit_kwargs or {})
    if progress is not None:
        kwargs["progress"] = progress
    if is_cancelled is not None:
        kwargs["is_cancelled"] = is_cancelled
    try:
        estimator = factory(**merged)
        result = estimator.fit(xy_arr, weights, **kwargs)
    except ClusteringCancelled:
        raise
    except Exception as exc:  # noqa: BLE001 - isolate any failure to its partition
        return PartitionOutcome(
            partition=partition,
            name=partition_name(partition),
            status=STATUS_FAILED,
            error=f"{type(exc).__name__}: {exc}",
            seconds=time.perf_counter() - started,
            n_units=n_units,
            weight=weight,
            seed=seed,
            params=merged,
        )
    return PartitionOutcome(
        partition=partition,
        name=partition_name(partition),
        status=STATUS_OK,
        error=None,
        seconds=time.perf_counter() - started,
        n_units=n_units,
        weight=weight,
        seed=seed,
        params=merged,
        result=result,
    )


# ---------------------------------------------------------------------------
# All partitions
# ---------------------------------------------------------------------------


class _ProgressAggregator:
    """Turns per-partition progress into one overall figure, thread-safely.

    Each partition counts in proportion to its number of units. The caller's
    callback receives ``(fraction in [0, 1], message)``.
    """

    def __init__(self, callback: Callable[..., Any] | None, sizes: Mapping[Hashable, int]):
        self._callback = callback
        self._lock = threading.Lock()
        total = sum(sizes.values())
        self._share = {key: (size / total if total else 0.0) for key, size in sizes.items()}
        self._done = dict.fromkeys(sizes, 0.0)
        self._finished = 0
        self._count = len(sizes)

    def _emit(self, message: str) -> None:
        if self._callback is None:
            return
        overall = sum(self._share[key] * frac for key, frac in self._done.items())
        self._callback(min(1.0, max(0.0, overall)), message)

    def inner(self, key: Hashable) -> Callable[..., None]:
        """A progress callback for one partition's ``fit``."""
        name = partition_name(key)

        def report(fraction: float, *args: Any, **kwargs: Any) -> None:
            fraction = float(fraction)
            if fraction > 1.0:  # a percentage
                fraction /= 100.0
            with self._lock:
                self._done[key] = min(1.0, max(self._done[key], fraction))
                self._emit(f"partition {name}")

        return report

    def finished(self, outcome: PartitionOutcome) -> None:
        with self._lock:
            self._done[outcome.partition] = 1.0
            self._finished += 1
            self._emit(
                f"partition {outcome.name} {outcome.status} "
                f"({self._finished}/{self._count} partitions done)"
            )


def _resolve_n_jobs(n_jobs: int | None, n_tasks: int) -> int:
    if n_jobs is None or n_jobs == 0:
        n_jobs = 1
    if n_jobs < 0:
        n_jobs = max(1, (os.cpu_count() or 1) + 1 + n_jobs)
    return max(1, min(int(n_jobs), n_tasks))


def cluster_partitions(
    xy: Any,
    weights: Any,
    partitions: Any,
    *,
    params: Mapping[str, Any],
    per_partition_params: Mapping[Hashable, Mapping[str, Any]] | None = None,
    n_jobs: int | None = 1,
    progress: Callable[[float, str], Any] | None = None,
    is_cancelled: Callable[[], bool] | None = None,
    estimator_factory: Callable[..., Any] | None = None,
    fit_kwargs: Mapping[str, Any] | None = None,
    keep_unit_results: bool = True,
) -> PartitionedResult:
    """Cluster every partition independently; clusters never cross partitions.

    Parameters
    ----------
    xy : array of shape (n, 2)
        Metric coordinates (metres) of every unit.
    weights : array of shape (n,) or None
        Unit weights (population); None gives every unit weight 1.
    partitions : array of shape (n,), pandas.Categorical or None
        Partition (stratum, admin area) value of every unit, text or
        integers; a ``Categorical`` passes millions of units compactly.
        NULL/NaN/empty values are an error. ``None`` clusters all units as
        one partition, with the unchanged seed and unprefixed IDs, exactly
        like the estimator alone.
    params : dict
        Estimator keyword arguments, the fallback for every partition
        (``desired_cluster_weight``, ``desired_cluster_radius``,
        ``random_state``...). Unknown keys go to the estimator unchanged.
    per_partition_params : dict, optional
        ``{partition value: {parameter: value}}`` overrides, e.g.
        ``{"1102305007": {"desired_cluster_radius": 2000}}``. Keys may be the
        values or their names (``"5"`` for 5); ``None`` values fall back.
    n_jobs : int
        Partitions fitted at once, in threads (-1: one per core). Results do
        not depend on it.
    progress : callable, optional
        ``progress(fraction, message)``, fraction in [0, 1] over all
        partitions, weighted by their number of units; called from worker
        threads.
    is_cancelled : callable, optional
        Polled before and during each partition; when it returns True the
        run stops with :class:`ClusteringCancelled`.
    estimator_factory : callable, optional
        ``factory(**params)`` -> estimator; default ``TunedClustering``.
    fit_kwargs : dict, optional
        Extra keyword arguments of ``fit``. Arrays with one row per unit
        (``lonlat``) are sliced per partition, (n, n) matrices
        (``adjacency``) keep the partition's rows and columns, and a
        :class:`PerPartition` makes the partition's own value from its rows.
    keep_unit_results : bool
        Keep each partition's engine result whole in ``outcomes`` (True), or
        without its per-unit arrays (False): they are in the combined result
        already, and dropping each as soon as its partition is merged keeps
        memory to about one partition's worth beyond the combined arrays.

    Returns
    -------
    PartitionedResult
        Failed partitions are recorded, not raised; see
        :meth:`PartitionedResult.raise_for_failures`.

    Raises
    ------
    ClusteringInputError
        Mismatched shapes, missing partition values, or overrides for
        partitions that no unit has.
    ClusteringCancelled
        When ``is_cancelled`` returns True.
    """
    xy_arr = _as_xy(xy)
    n = xy_arr.shape[0]
    if n == 0:
        raise ClusteringInputError("There are no units to cluster. Pass at least one unit.")
    weights_arr = None
    if weights is not None:
        weights_arr = np.asarray(weights, dtype=float)
        if weights_arr.shape != (n,):
            raise ClusteringInputError(
                f"weights must have one value per unit ({n}), got shape {weights_arr.shape}. "
                "Pass the weight field's value for every unit."
            )

    unpartitioned = partitions is None
    if unpartitioned:
        if per_partition_params:
            raise ClusteringInputError(
                "per_partition_params needs partitions. Pass the partition value of every unit."
            )
        keys: list[Hashable] = [None]
        codes = None
        rows_of: dict[Hashable, np.ndarray] = {None: np.arange(n)}
    else:
        keys, codes, rows_of = _grouped(partitions, n)
    overrides = _overrides_lookup(per_partition_params, keys)

    aggregator = _ProgressAggregator(progress, {k: len(r) for k, r in rows_of.items()})
    cancel_event = threading.Event()

    def cancelled() -> bool:
        if cancel_event.is_set():
            return True
        if is_cancelled is not None and is_cancelled():
            cancel_event.set()
            return True
        return False

    def run(key: Hashable) -> PartitionOutcome:
        if cancelled():
            raise ClusteringCancelled("Clustering was cancelled.")
        rows = rows_of[key]
        outcome = fit_partition(
            xy_arr[rows],
            None if weights_arr is None else weights_arr[rows],
            key,
            params=params,
            overrides=overrides.get(key),
            progress=aggregator.inner(key) if progress is not None else None,
            is_cancelled=cancelled if is_cancelled is not None else None,
            estimator_factory=estimator_factory,
            fit_kwargs=_slice_fit_kwargs(fit_kwargs or {}, rows, n),
            derive_seed=not unpartitioned,
        )
        aggregator.finished(outcome)
        return outcome

    merged = _Merger(n, rows_of, prefix=not unpartitioned, keep_unit_results=keep_unit_results)
    # Largest partitions first keeps the threads busy until the end.
    schedule = sorted(keys, key=lambda key: -len(rows_of[key]))
    workers = _resolve_n_jobs(n_jobs, len(keys))
    if workers == 1:
        for key in schedule:
            merged.add(run(key))
    else:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tgc-partition") as pool:
            futures = [pool.submit(run, key) for key in schedule]
            # Each partition is merged as it finishes, so its per-unit arrays go at once.
            for future in as_completed(futures):
                if future.exception() is not None:
                    cancel_event.set()
                    for other in futures:
                        other.cancel()
                    raise future.exception()  # cancellation or a bug in this module
                merged.add(future.result())
    return merged.result(keys, codes)


class _Merger:
    """Puts the partitions' results together, one partition at a time, in any order.

    Labels are first stored per partition (rows of its own cluster table) and
    shifted to rows of the combined table at the end, once every partition's
    number of clusters is known: the result does not depend on the order in
    which partitions finish.
    """

    def __init__(
        self,
        n: int,
        rows_of: Mapping[Hashable, np.ndarray],
        *,
        prefix: bool,
        keep_unit_results: bool,
    ) -> None:
        self.rows_of = rows_of
        self.prefix = prefix
        self.keep_unit_results = keep_unit_results
        self.labels = np.full(n, -1, dtype=np.int32)
        self.outcomes: dict[Hashable, PartitionOutcome] = {}
        self.tables: dict[Hashable, pd.DataFrame] = {}
        self.trials: dict[Hashable, pd.DataFrame] = {}
        self.fallbacks: dict[Hashable, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def add(self, outcome: PartitionOutcome) -> None:
        key = outcome.partition
        self.outcomes[key] = outcome
        if not outcome.ok:
            return
        rows = self.rows_of[key]
        result = outcome.result
        table = result.clusters.copy()
        local, ids = _labels_and_ids(key if self.prefix else None, result.cluster_ids, table)
        self.labels[rows] = local
        unit_pass = np.asarray(result.cluster_pass, dtype=np.int64)
        # Units the table cannot describe (not the engine's): kept apart, per unit.
        odd = local < 0
        if "pass" in table.columns and len(table):
            table_pass = table["pass"].to_numpy(dtype=np.int64)
            odd |= (local >= 0) & (table_pass[np.maximum(local, 0)] != unit_pass)
        else:
            odd[:] = True
        if odd.any():
            self.fallbacks[key] = (rows[odd], ids[odd], unit_pass[odd])
        table.insert(0, "partition", key)
        self.tables[key] = table
        trials = getattr(result, "trials", None)
        if trials is not None and len(trials):
            trials = trials.copy()
            trials.insert(0, "partition", key)
            self.trials[key] = trials
        if not self.keep_unit_results:
            outcome.result = _without_unit_arrays(result)

    def result(self, keys: Sequence[Hashable], codes: np.ndarray | None) -> PartitionedResult:
        outcomes = {key: self.outcomes[key] for key in keys}  # report in partition order
        offset = 0
        for key in keys:
            table = self.tables.get(key)
            if table is None:
                continue
            if offset:
                rows = self.rows_of[key]
                local = self.labels[rows]
                self.labels[rows] = np.where(local >= 0, local + offset, -1)
            offset += len(table)

        # The engine is loaded by now (every partition was fitted with it).
        from .tuned import CLUSTER_COLUMNS, TRIAL_COLUMNS

        tables = [self.tables[key] for key in keys if key in self.tables]
        trials = [self.trials[key] for key in keys if key in self.trials]
        clusters = (
            pd.concat(tables, ignore_index=True)
            if tables
            else pd.DataFrame(columns=["partition", *CLUSTER_COLUMNS])
        )
        trials_table = (
            pd.concat(trials, ignore_index=True)
            if trials
            else pd.DataFrame(columns=["partition", *TRIAL_COLUMNS])
        )
        summary = pd.DataFrame([outcomes[key].summary() for key in keys], columns=_SUMMARY_COLUMNS)
        return PartitionedResult(
            labels=self.labels,
            clusters=clusters,
            trials=trials_table,
            partitions=summary,
            outcomes=outcomes,
            partition_values=list(keys),
            partition_codes=codes,
            unit_fallbacks=[self.fallbacks[key] for key in keys if key in self.fallbacks],
        )


def _without_unit_arrays(result: Any) -> Any:
    """The engine's result with empty per-unit arrays (its tables and figures kept)."""
    if not dataclasses.is_dataclass(result):
        return result
    names = {f.name for f in dataclasses.fields(result)}
    emptied = {
        name: np.empty(0, dtype=np.asarray(getattr(result, name)).dtype)
        for name in ("labels", "cluster_ids", "cluster_pass")
        if name in names
    }
    return dataclasses.replace(result, **emptied)


def _labels_and_ids(
    partition: Hashable | None, unit_ids: Any, table: pd.DataFrame
) -> tuple[np.ndarray, np.ndarray]:
    """Row of each unit's cluster in ``table`` (-1: none) and its (prefixed) cluster ID.

    ``table["cluster_id"]`` is prefixed in place when ``partition`` is given.
    Units share the ID strings of the table (one object per cluster, not per
    unit): a million units cost a pointer each, not a million strings.
    """
    unit_ids = np.asarray(unit_ids, dtype=object)
    table_ids = table["cluster_id"].to_numpy(dtype=object)
    index = pd.Index(table_ids)
    if index.is_unique:
        local = index.get_indexer(unit_ids)
    else:  # repeated IDs (not from the engine): the last row of an ID wins
        row_of_id = {cid: i for i, cid in enumerate(table_ids.tolist())}
        local = np.array([row_of_id.get(cid, -1) for cid in unit_ids.tolist()], dtype=np.int64)
    if partition is not None:
        table_ids = prefixed_cluster_ids(partition, table_ids.tolist())
        table["cluster_id"] = table_ids
    ids = np.empty(unit_ids.shape[0], dtype=object)
    found = local >= 0
    ids[found] = table_ids[local[found]]
    if not found.all():  # IDs missing from the table (None, ""): kept, prefixed if not empty
        missing = unit_ids[~found]
        ids[~found] = (
            prefixed_cluster_ids(partition, missing.tolist()) if partition is not None else missing
        )
    return local, ids


def failed_share_exceeded(n_failed: int, n_total: int, max_failed_share: float) -> bool:
    """True when ``n_failed / n_total`` is above the tolerated share."""
    if n_total <= 0 or n_failed <= 0:
        return False
    # Compare counts, not a rounded ratio: 1 of 10 with 0.1 tolerated passes.
    return n_failed > max_failed_share * n_total + 1e-9
