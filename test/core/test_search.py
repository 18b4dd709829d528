"""Score formula, search space and the coarse-to-fine search for k."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tuned_grid_clustering.core.search import (
    clustering_score,
    expected_n_clusters,
    expected_trials,
    search_k,
    search_space,
)

# -- score ---------------------------------------------------------------------


def test_score_hand_computed():
    # (1000 / 240) * |240 - 200| + |1000 - 1500| = 166.67 + 500
    assert clustering_score(200, 1500, 240, 1000) == pytest.approx(1000 / 240 * 40 + 500)
    # f_bias scales the weight term only: 2 * (500 / 100) * 30 + 200
    assert clustering_score(130, 700, 100, 500, weight_importance_factor=2) == pytest.approx(500)
    # On target: zero.
    assert clustering_score(240, 1000, 240, 1000) == 0.0
    # f_bias = 0: the radius term alone.
    assert clustering_score(1, 1200, 240, 1000, weight_importance_factor=0) == pytest.approx(200)
    # Symmetric around the targets.
    assert clustering_score(280, 900, 240, 1000) == clustering_score(200, 1100, 240, 1000)


# -- search space ----------------------------------------------------------------


def test_expected_n_clusters_truncates_and_clamps():
    assert expected_n_clusters(17206.7, 240, 69226) == 71
    assert expected_n_clusters(100, 240, 10) == 1  # never 0
    assert expected_n_clusters(1e6, 1, 50) == 50  # never more than the units


def test_search_space_examples():
    assert search_space(71, 69226) == (23, 119)  # k0 +- ceil(2 * 71 / 3)
    assert search_space(1, 1000) == (1, 5)  # at least k0 +- 4, never below 1
    assert search_space(2, 1000) == (1, 6)
    assert search_space(10, 3) == (1, 3)  # clamped to the number of units
    assert search_space(1, 1) == (1, 1)


@given(st.integers(-5, 10_000), st.integers(1, 10_000))
def test_search_space_within_one_to_n_and_around_k0(k0, n):
    low, high = search_space(k0, n)
    assert 1 <= low <= high <= n
    clamped = max(1, min(k0, n))
    assert low <= clamped <= high


def test_search_space_rejects_no_units():
    with pytest.raises(ValueError):
        search_space(3, 0)


# -- search ----------------------------------------------------------------------


class Recorder:
    """An objective that records every batch it is asked for."""

    def __init__(self, function):
        self.function = function
        self.batches: list[list[int]] = []

    def __call__(self, batch):
        self.batches.append(list(batch))
        return [self.function(k) for k in batch]

    @property
    def calls(self) -> list[int]:
        return [k for batch in self.batches for k in batch]


@pytest.mark.parametrize("optimum", [1, 7, 23, 50, 71, 118, 119])
def test_search_finds_minimum_of_v_shaped_score(optimum):
    objective = Recorder(lambda k: abs(k - optimum) * 3.0 + 10)
    outcome = search_k((1, 119), 100, objective, k_start=71)
    assert outcome.best_k == optimum
    assert outcome.best_score == 10
    assert len(objective.calls) <= 30  # far fewer than the 119 values


@settings(max_examples=80, deadline=None)
@given(
    low=st.integers(1, 60),
    width=st.integers(0, 150),
    budget=st.integers(1, 40),
    seed=st.integers(0, 10_000),
)
def test_search_respects_budget_bounds_and_evaluates_each_k_once(low, width, budget, seed):
    high = low + width

    def noisy(k):  # deterministic pseudo-random scores
        return float((k * 7919 + seed) % 101)

    objective = Recorder(noisy)
    outcome = search_k(
        (low, high),
        budget,
        objective,
        k_start=(low + high) // 2,
        seed=seed,
        record_with_optuna=False,
    )
    calls = objective.calls
    assert 1 <= len(calls) <= budget
    assert len(set(calls)) == len(calls)
    assert all(low <= k <= high for k in calls)
    assert [k for k, _ in outcome.evaluated] == calls
    best = min(calls, key=lambda k: (noisy(k), k))
    assert outcome.best_k == best


def test_search_is_deterministic():
    def score(k):
        return float((k * 37) % 17) + abs(k - 40) / 10

    first = search_k((10, 90), 25, Recorder(score), k_start=50, seed=3)
    second = search_k((10, 90), 25, Recorder(score), k_start=50, seed=3)
    assert first == second


def test_small_space_is_searched_exhaustively_closest_to_k0_first():
    objective = Recorder(lambda k: 5.0)
    outcome = search_k((1, 5), 20, objective, k_start=1)
    assert objective.calls == [1, 2, 3, 4, 5]
    assert outcome.best_k == 1  # all tied: the smallest k


def test_ties_break_to_smallest_k():
    outcome = search_k((1, 9), 20, Recorder(lambda k: 0.0 if k in (4, 8) else 1.0), k_start=8)
    assert outcome.best_k == 4


def test_budget_of_one_evaluates_k0():
    objective = Recorder(lambda k: float(k))
    outcome = search_k((23, 119), 1, objective, k_start=71)
    assert objective.calls == [71]
    assert outcome.best_k == 71


def test_search_records_optuna_trials_without_changing_the_result():
    pytest.importorskip("optuna")  # optional: only for recording studies
    score = lambda k: abs(k - 33) + 0.5  # noqa: E731
    with_optuna = search_k((1, 100), 30, Recorder(score), k_start=50, record_with_optuna=True)
    without = search_k((1, 100), 30, Recorder(score), k_start=50, record_with_optuna=False)
    assert with_optuna == without


def test_search_rejects_bad_arguments():
    with pytest.raises(ValueError):
        search_k((0, 5), 10, Recorder(float))
    with pytest.raises(ValueError):
        search_k((6, 5), 10, Recorder(float))
    with pytest.raises(ValueError):
        search_k((1, 5), 0, Recorder(float))


def test_expected_trials_is_within_budget():
    assert expected_trials((1, 5), 20) == 5
    assert 1 <= expected_trials((23, 119), 100) <= 100
    assert expected_trials((23, 119), 3) == 3


# -- import cost -----------------------------------------------------------------


def _cluster_in_a_new_python(before: str, after: str) -> list[str]:
    """A small clustering in a fresh interpreter, the plugin imported as QGIS does; its output.

    ``before`` runs first (e.g. hiding a package), ``after`` with ``result``.
    """
    import subprocess
    import sys
    from pathlib import Path

    plugins = Path(__file__).resolve().parents[2] / ".build" / "plugins"
    code = (
        f"import sys\n{before}\n"
        "import numpy as np\n"
        "from tuned_grid_clustering.core.tuned import TunedClustering\n"
        "xy = np.random.default_rng(0).uniform(0, 5000, (400, 2))\n"
        "result = TunedClustering(desired_cluster_weight=40, desired_cluster_radius=500,"
        " max_cluster_weight=60, max_passes=3).fit(xy, np.ones(400))\n"
        f"{after}\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(plugins), "PATH": "/usr/bin:/bin"},
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    return completed.stdout.splitlines()


def test_clustering_does_not_import_optuna():
    # Optuna takes ~0.4 s to import, paid by every qgis_process run; the
    # study is built only when asked for (ClusteringResult.optuna_study).
    assert _cluster_in_a_new_python("", "print('optuna' in sys.modules)") == ["False"]


def test_clustering_runs_without_optuna():
    # Optuna is optional: as if it were not installed, a clustering still
    # runs, and asking for a study says how to install it.
    lines = _cluster_in_a_new_python(
        "sys.modules['optuna'] = None\n"
        "from tuned_grid_clustering.core.dependencies import missing_packages\n"
        "assert missing_packages() == [], missing_packages()",
        "print(result.n_clusters > 1)\n"
        "try:\n"
        "    result.optuna_study()\n"
        "except ImportError as error:\n"
        "    print(error)",
    )
    assert lines[0] == "True"
    message = "\n".join(lines[1:])
    assert "optuna_study() needs these Python packages, which are missing: optuna" in message
    assert "pip install optuna" in message and "apt install python3-optuna" in message


def test_a_recorded_search_still_works_with_optuna_imported_late():
    outcome = search_k((1, 10), 20, lambda batch: [abs(k - 7) for k in batch], k_start=5)
    assert outcome.best_k == 7
    assert sorted(k for k, _ in outcome.evaluated) == list(range(1, 11))


def test_the_study_is_built_on_demand_with_every_trial():
    pytest.importorskip("optuna")
    import numpy as np

    from tuned_grid_clustering.core.errors import ClusteringInputError
    from tuned_grid_clustering.core.tuned import TunedClustering

    xy = np.random.default_rng(1).uniform(0, 8000, (600, 2))
    estimator = TunedClustering(
        desired_cluster_weight=40, desired_cluster_radius=600, max_cluster_weight=50, max_passes=3
    )
    result = estimator.fit(xy, np.ones(600))
    study = result.optuna_study()
    first = result.trials[result.trials["pass"] == 1]
    assert [t.params["k"] for t in study.trials] == first["k"].tolist()
    assert [t.value for t in study.trials] == pytest.approx(first["score"].tolist())
    assert study.best_params["k"] == result.best_k
    later = result.trials[result.trials["pass"] == 2]
    if later["parent_id"].nunique() > 1:
        with pytest.raises(ClusteringInputError, match="parent"):
            result.optuna_study(2)
        parent = later["parent_id"].iloc[0]
        own = later[later["parent_id"] == parent]
        assert len(result.optuna_study(2, parent).trials) == len(own)
    with pytest.raises(ClusteringInputError, match="pass 99"):
        result.optuna_study(99)
