"""Partitioned clustering: clusters never cross a partition, failures stay local."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from tuned_grid_clustering.core import (
    ClusteringCancelled,
    ClusteringInputError,
    TunedClustering,
    project_to_metric,
)
from tuned_grid_clustering.core.partitions import (
    STATUS_FAILED,
    STATUS_OK,
    cluster_partitions,
    failed_share_exceeded,
    fit_partition,
    group_partitions,
    partition_name,
    partition_seed,
)
from tuned_grid_clustering.core.synthetic import synthetic_population_grid

PARAMS = {
    "desired_cluster_weight": 60.0,
    "desired_cluster_radius": 1500.0,
    "initial_max_trials": 12,
    "random_state": 7,
}


@pytest.fixture(scope="module")
def grid():
    """About 3000 populated cells, split in two partitions by longitude."""
    g = synthetic_population_grid(3000, seed=11)
    xy, _ = project_to_metric(g.lon, g.lat, "EPSG:4326")
    side = np.where(g.lon < np.median(g.lon), "west", "east").astype(object)
    return xy, g.population.astype(float), side


def test_no_cluster_crosses_a_partition(grid):
    xy, weights, side = grid
    result = cluster_partitions(xy, weights, side, params=PARAMS)

    assert set(result.partitions["status"]) == {STATUS_OK}
    assert (result.labels >= 0).all()
    # Every cluster's members all lie in the cluster's own partition.
    cluster_partition = result.clusters["partition"].to_numpy()
    assert (cluster_partition[result.labels] == side).all()
    for cid in np.unique(result.cluster_ids):
        assert len(set(side[result.cluster_ids == cid])) == 1
    # IDs carry the partition, and the table matches the units.
    assert all(cid.startswith(f"{p}/CLUSTER_") for cid, p in zip(result.cluster_ids, side))
    assert (result.clusters["cluster_id"].to_numpy()[result.labels] == result.cluster_ids).all()
    counts = result.clusters.set_index("cluster_id")["n_units"]
    ids, n = np.unique(result.cluster_ids, return_counts=True)
    assert (counts.loc[ids].to_numpy() == n).all()
    assert result.n_clusters == len(ids)
    # One summary row per partition, weights add up, trials are labelled.
    summary = result.partitions.set_index("partition")
    assert summary.loc["west", "n_units"] + summary.loc["east", "n_units"] == len(xy)
    assert summary["weight"].sum() == pytest.approx(weights.sum())
    assert set(result.trials["partition"]) == {"west", "east"}


def test_each_partition_meets_its_own_radius_target(grid):
    """The original's urban/rural rule: 1000 m in one stratum, 2000 m in the other."""
    xy, weights, side = grid
    params = {**PARAMS, "desired_cluster_weight": 120.0, "weight_importance_factor": 0.0}
    targets = {"west": 1000.0, "east": 2000.0}
    result = cluster_partitions(
        xy,
        weights,
        side,
        params=params,
        per_partition_params={p: {"desired_cluster_radius": r} for p, r in targets.items()},
    )
    medians = result.clusters.groupby("partition")["radius_m"].median()
    for partition, target in targets.items():
        other = 3000.0 - target
        assert abs(medians[partition] - target) < abs(medians[partition] - other), medians
        assert result.outcomes[partition].params["desired_cluster_radius"] == target
    # The same as clustering each partition alone with its own target and seed.
    for partition, target in targets.items():
        rows = side == partition
        alone = TunedClustering(
            **{
                **params,
                "desired_cluster_radius": target,
                "random_state": partition_seed(params["random_state"], partition),
            }
        ).fit(xy[rows], weights[rows])
        expected = np.array([f"{partition}/{cid}" for cid in alone.cluster_ids], dtype=object)
        assert (result.cluster_ids[rows] == expected).all()


def test_missing_partition_values_are_a_clear_error(grid):
    xy, weights, side = grid
    broken = side.copy()
    broken[[3, 10, 20]] = [None, np.nan, "  "]
    with pytest.raises(ClusteringInputError, match=r"3 of \d+ units have no partition value"):
        cluster_partitions(xy, weights, broken, params=PARAMS)
    with pytest.raises(ClusteringInputError, match="one value per unit"):
        cluster_partitions(xy, weights, side[:-1], params=PARAMS)


def test_a_bad_partition_fails_alone_with_its_name(grid):
    xy, weights, side = grid
    bad_weights = weights.copy()
    bad_weights[side == "east"] = 0.0  # all-zero weights: the engine refuses
    result = cluster_partitions(xy, bad_weights, side, params=PARAMS, n_jobs=2)

    assert result.failed.keys() == {"east"}
    assert "ClusteringInputError" in result.failed["east"]
    assert "zero" in result.failed["east"]
    east = side == "east"
    assert (result.status[east] == STATUS_FAILED).all()
    assert (result.status[~east] == STATUS_OK).all()
    assert all(cid is None for cid in result.cluster_ids[east])
    assert (result.labels[east] == -1).all() and (result.cluster_pass[east] == 0).all()
    assert (result.labels[~east] >= 0).all()
    assert set(result.clusters["partition"]) == {"west"}
    row = result.partitions.set_index("partition").loc["east"]
    assert row["status"] == STATUS_FAILED and row["n_clusters"] == 0
    assert result.failed_share == 0.5
    result.raise_for_failures(max_failed_share=0.5)  # tolerated
    with pytest.raises(ClusteringInputError, match="east"):
        result.raise_for_failures(max_failed_share=0.1)

    # The good partition's clusters are those of a run without the bad one.
    west_only = cluster_partitions(xy[~east], weights[~east], side[~east], params=PARAMS)
    assert (west_only.cluster_ids == result.cluster_ids[~east]).all()


def test_same_clusters_whatever_n_jobs(grid):
    xy, weights, side = grid
    # Four partitions of different sizes, integer values.
    quadrant = (xy[:, 0] > np.median(xy[:, 0])).astype(int) * 2 + (
        xy[:, 1] > np.percentile(xy[:, 1], 30)
    ).astype(int)
    runs = [
        cluster_partitions(xy, weights, quadrant, params=PARAMS, n_jobs=n_jobs)
        for n_jobs in (1, 2, -1)
    ]
    for other in runs[1:]:
        assert (other.cluster_ids == runs[0].cluster_ids).all()
        assert (other.labels == runs[0].labels).all()
        assert other.clusters.equals(runs[0].clusters)
        assert other.partitions["seed"].tolist() == runs[0].partitions["seed"].tolist()


def test_without_partitions_it_is_the_plain_engine(grid):
    xy, weights, _ = grid
    result = cluster_partitions(xy, weights, None, params=PARAMS)
    plain = TunedClustering(**PARAMS).fit(xy, weights)
    assert (result.cluster_ids == plain.cluster_ids).all()
    assert (result.labels == plain.labels).all()
    assert result.outcomes[None].seed == PARAMS["random_state"]
    assert result.clusters["cluster_id"].tolist() == plain.clusters["cluster_id"].tolist()


def test_single_partition_matches_fit_partition(grid):
    xy, weights, side = grid
    west = side == "west"
    together = cluster_partitions(xy, weights, side, params=PARAMS)
    outcome = fit_partition(xy[west], weights[west], "west", params=PARAMS)
    assert outcome.ok and outcome.seed == partition_seed(7, "west")
    assert (together.cluster_ids[west] == ["west/" + c for c in outcome.result.cluster_ids]).all()


def test_seed_derivation_is_stable():
    assert partition_seed(42, "A") == (42 + zlib.crc32(b"A")) % 2**32
    assert partition_seed(42, 1102305007) == partition_seed(42, "1102305007")
    assert partition_seed(42, 1102305007.0) == partition_seed(42, np.int64(1102305007))
    assert partition_seed(None, "A") is None
    assert partition_name(np.int64(5)) == "5" and partition_name(5.5) == "5.5"


def test_overrides_by_name_and_unknown_keys(grid):
    xy, weights, side = grid
    codes = np.where(side == "west", 1102305007, 1102305008)
    result = cluster_partitions(
        xy,
        weights,
        codes,
        params=PARAMS,
        per_partition_params={"1102305007": {"desired_cluster_weight": 120.0}},
    )
    assert result.outcomes[1102305007].params["desired_cluster_weight"] == 120.0
    assert result.outcomes[1102305008].params["desired_cluster_weight"] == 60.0
    assert result.cluster_ids[0].startswith(f"{codes[0]}/CLUSTER_")
    with pytest.raises(ClusteringInputError, match="no unit has: 'nowhere'"):
        cluster_partitions(xy, weights, codes, params=PARAMS, per_partition_params={"nowhere": {}})
    mixed = codes.astype(object)
    mixed[0] = str(mixed[0])  # "1102305007" and 1102305007: same name
    with pytest.raises(ClusteringInputError, match="same name"):
        cluster_partitions(xy, weights, mixed, params=PARAMS)


def test_bad_override_fails_only_its_partition(grid):
    xy, weights, side = grid
    result = cluster_partitions(
        xy,
        weights,
        side,
        params=PARAMS,
        per_partition_params={"west": {"desired_cluster_radius": -5}},
    )
    assert result.failed.keys() == {"west"}
    assert "desired_cluster_radius" in result.failed["west"]


def test_progress_and_cancellation(grid):
    xy, weights, side = grid
    seen = []
    cluster_partitions(
        xy, weights, side, params=PARAMS, n_jobs=2, progress=lambda f, m: seen.append((f, m))
    )
    assert seen and seen[-1][0] == pytest.approx(1.0)
    assert all(0.0 <= f <= 1.0 for f, _ in seen)
    assert any("partitions done" in m for _, m in seen)

    calls = []

    def cancel_after_a_while() -> bool:
        calls.append(1)
        return len(calls) > 3

    with pytest.raises(ClusteringCancelled):
        cluster_partitions(
            xy, weights, side, params=PARAMS, n_jobs=2, is_cancelled=cancel_after_a_while
        )


class _RecordingEstimator:
    """A stand-in engine that records the per-unit arguments it was given."""

    received: list = []

    def __init__(self, **params):
        self.params = params

    def fit(self, xy, weights=None, *, lonlat=None, adjacency=None, scale=None):
        type(self).received.append((len(xy), lonlat.shape, adjacency.shape, scale))
        return TunedClustering(**self.params).fit(xy, weights)


def test_per_unit_fit_arguments_are_sliced(grid):
    from scipy import sparse

    xy, weights, side = grid
    n = len(xy)
    _RecordingEstimator.received = []
    cluster_partitions(
        xy,
        weights,
        side,
        params=PARAMS,
        estimator_factory=_RecordingEstimator,
        fit_kwargs={"lonlat": np.zeros((n, 2)), "adjacency": sparse.eye(n), "scale": 3},
    )
    sizes = sorted(_RecordingEstimator.received)
    expected = sorted(int((side == p).sum()) for p in ("west", "east"))
    assert [s[0] for s in sizes] == expected
    assert all(s[1] == (s[0], 2) and s[2] == (s[0], s[0]) and s[3] == 3 for s in sizes)


def test_group_partitions_keeps_input_order():
    keys, rows_of = group_partitions(np.array(["b", "a", "b", "a", "c"], dtype=object), 5)
    assert keys == ["a", "b", "c"]
    assert rows_of["a"].tolist() == [1, 3] and rows_of["b"].tolist() == [0, 2]


def test_failed_share_threshold():
    assert not failed_share_exceeded(1, 10, 0.1)
    assert failed_share_exceeded(2, 10, 0.1)
    assert failed_share_exceeded(1, 1, 0.0)
    assert not failed_share_exceeded(0, 10, 0.0)


def test_unit_ids_share_the_table_strings(grid):
    """Per-unit IDs are the table's own string objects: memory per unit is a pointer."""
    xy, weights, side = grid
    result = cluster_partitions(xy, weights, side, params=PARAMS)
    table_ids = result.clusters["cluster_id"].to_numpy()
    assert all(
        unit_id is table_ids[label]
        for unit_id, label in zip(result.cluster_ids.tolist(), result.labels.tolist())
    )


def test_ids_missing_from_the_table_keep_label_minus_one():
    """An estimator whose unit IDs are not all in its table: those units get label -1."""
    import pandas as pd

    class Result:
        n_clusters = 1
        cluster_ids = np.array(["A", None, "B"], dtype=object)
        cluster_pass = np.array([1, 1, 1])
        clusters = pd.DataFrame({"cluster_id": ["A"], "weight": [1.0]})
        trials = None

    class Estimator:
        def __init__(self, **params):
            pass

        def fit(self, xy, weights=None, **kwargs):
            return Result()

    xy = np.zeros((3, 2))
    result = cluster_partitions(
        xy,
        None,
        np.array(["p", "p", "p"], dtype=object),
        params={},
        estimator_factory=Estimator,
    )
    assert result.labels.tolist() == [0, -1, -1]
    assert result.cluster_ids.tolist() == ["p/A", None, "p/B"]


def test_unit_partitions_are_shared_objects(grid):
    """Integer partition values come back as Python ints, one object per partition."""
    xy, weights, side = grid
    codes = np.where(side == "west", 11, 22).astype(np.int32)
    result = cluster_partitions(xy, weights, codes, params=PARAMS)
    values = result.unit_partitions
    assert values.dtype == object
    assert {type(v) for v in values} == {int}
    assert (values == codes).all()
    assert len({id(v) for v in values}) == 2


def test_per_partition_adjacency_gives_the_same_clusters():
    """A neighbour graph made per partition equals slicing the whole graph."""
    from tuned_grid_clustering.core.adjacency import cell_adjacency
    from tuned_grid_clustering.core.partitions import PerPartition

    g = synthetic_population_grid(4000, seed=5)
    xy, _ = project_to_metric(g.lon, g.lat, "EPSG:4326")
    side = np.where(g.col < np.median(g.col), "west", "east").astype(object)
    params = {**PARAMS, "min_cluster_weight": 40.0, "contiguity": True}
    whole = cell_adjacency(g.col, g.row).matrix
    made: list[int] = []

    def make(rows):
        made.append(len(rows))
        part = cell_adjacency(g.col[rows], g.row[rows]).matrix
        expected = whole.tocsr()[rows][:, rows]
        assert (part != expected).nnz == 0
        return part

    full = cluster_partitions(
        xy, g.population, side, params=params, fit_kwargs={"adjacency": whole}
    )
    lazy = cluster_partitions(
        xy, g.population, side, params=params, fit_kwargs={"adjacency": PerPartition(make)}
    )
    assert sorted(made) == sorted(np.unique(side, return_counts=True)[1].tolist())
    assert (full.labels == lazy.labels).all()
    assert (full.cluster_ids == lazy.cluster_ids).all()
    assert full.clusters.equals(lazy.clusters)


def test_unit_status_strings_are_shared(grid):
    xy, weights, side = grid
    result = cluster_partitions(xy, weights, side, params=PARAMS)
    assert set(result.status.tolist()) == {STATUS_OK}
    assert len({id(value) for value in result.status}) == 1


def test_categorical_partitions_give_the_same_clusters(grid):
    """A pandas Categorical (compact codes) is the same as the values it stands for."""
    import pandas as pd

    xy, weights, side = grid
    as_values = cluster_partitions(xy, weights, side, params=PARAMS)
    # Unused and unsorted categories are allowed; the codes are what counts.
    categorical = pd.Categorical(side, categories=["west", "nowhere", "east"])
    as_codes = cluster_partitions(xy, weights, categorical, params=PARAMS)
    assert (as_codes.cluster_ids == as_values.cluster_ids).all()
    assert (as_codes.unit_partitions == side).all()
    assert as_codes.partition_values == ["east", "west"]
    with pytest.raises(ClusteringInputError, match="no partition value"):
        cluster_partitions(xy, weights, pd.Categorical([None] * len(side)), params=PARAMS)


def test_unit_results_can_be_dropped_as_partitions_finish(grid):
    """keep_unit_results=False: same combined result, no per-unit arrays left per partition."""
    xy, weights, side = grid
    kept = cluster_partitions(xy, weights, side, params=PARAMS, n_jobs=2)
    lean = cluster_partitions(xy, weights, side, params=PARAMS, n_jobs=2, keep_unit_results=False)
    assert (lean.labels == kept.labels).all()
    assert (lean.cluster_pass == kept.cluster_pass).all()
    assert lean.clusters.equals(kept.clusters)
    for key, outcome in lean.outcomes.items():
        assert outcome.result.labels.size == 0
        assert outcome.result.best_k == kept.outcomes[key].result.best_k
        assert outcome.result.quality == kept.outcomes[key].result.quality
    # Two small integers per unit are all the combined result stores.
    assert lean.labels.dtype == np.int32 and lean.partition_codes.dtype == np.int32
