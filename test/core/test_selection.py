"""Tests of core.selection: exact inclusion probabilities, certainty, seeds, errors."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest

from tuned_grid_clustering.core.errors import ClusteringInputError
from tuned_grid_clustering.core.selection import (
    PsuSelector,
    _sampford_draw,
    inclusion_probabilities,
    sample_sizes_from_column,
    select_pps,
    selection_report_html,
    serpentine_order,
)

# Two strata with skewed sizes, each with one certainty unit: 40 * 3 >= 81 in "a",
# 20 * 4 >= 54 in "b".
SIZES = np.array([5, 1, 2, 3, 8, 13, 2, 1, 40, 6, 3, 3, 9, 1, 2, 7, 20, 4, 4, 1], dtype=float)
STRATA = np.array(["a"] * 10 + ["b"] * 10, dtype=object)
SAMPLE_SIZES = {"a": 3, "b": 4}
_rng = np.random.default_rng(2024)
X = _rng.uniform(0, 5000, SIZES.size)
Y = _rng.uniform(0, 3000, SIZES.size)


def _draw(method: str, seed, **kwargs):
    return select_pps(
        SIZES, SAMPLE_SIZES, strata=STRATA, x=X, y=Y, method=method, random_state=seed, **kwargs
    )


# -- inclusion probabilities -------------------------------------------------


def test_pi_is_proportional_to_size_without_certainty_units():
    pi, certainty = inclusion_probabilities([1, 2, 3, 4], 2)
    np.testing.assert_allclose(pi, [0.2, 0.4, 0.6, 0.8])
    assert not certainty.any()


def test_certainty_units_cascade():
    # Interval 162/3 = 54: unit 0 (100) is certain. Then 62/2 = 31: unit 5 (50) becomes
    # certain only after unit 0 is removed. Then 12/1 = 12: no more.
    sizes = [100, 1, 1, 1, 1, 50, 2, 2, 2, 2]
    pi, certainty = inclusion_probabilities(sizes, 3)
    assert certainty.tolist() == [True] + [False] * 4 + [True] + [False] * 4
    expected = np.array([1, 1, 1, 1, 1, 12, 2, 2, 2, 2]) / 12.0
    expected[[0, 5]] = 1.0
    np.testing.assert_allclose(pi, expected)
    assert math.isclose(pi.sum(), 3.0)


def test_sample_of_whole_stratum_is_all_certainty():
    pi, certainty = inclusion_probabilities([0.1] * 7, 7)
    assert certainty.all() and (pi == 1).all()


@pytest.mark.parametrize("method", ["systematic", "sampford", "srs"])
def test_pi_sums_to_n_and_exactly_n_selected_per_stratum(method):
    for seed in range(20):
        result = _draw(method, seed)
        frame = result.to_frame()
        for label, n in SAMPLE_SIZES.items():
            rows = frame[frame.stratum == label]
            assert math.isclose(rows.pi.sum(), n, rel_tol=1e-12)
            assert int(rows.selected.sum()) == n
            assert sorted(rows.selection_order[rows.selected]) == list(range(1, n + 1))
        if method != "srs":
            # the certainty units are always in
            assert result.certainty[[8, 16]].all() and result.selected[[8, 16]].all()
            assert (result.pi[[8, 16]] == 1.0).all() and result.certainty.sum() == 2
        np.testing.assert_allclose(result.design_weight, 1.0 / result.pi)


def test_summary_per_stratum():
    summary = _draw("systematic", 7).summary
    assert summary.stratum.tolist() == ["a", "b"]
    assert summary.n_units.tolist() == [10, 10]
    assert summary.sample_size.tolist() == [3, 4]
    assert summary.total_size.tolist() == [81.0, 54.0]
    assert summary.n_certainty.tolist() == [1, 1]
    # the certain units are removed, then interval = (total - certain) / (n - 1)
    np.testing.assert_allclose(summary.interval, [(81 - 40) / 2, (54 - 20) / 3])
    np.testing.assert_allclose(summary.sum_pi, [3, 4])
    assert ((summary.random_start >= 0) & (summary.random_start < summary.interval)).all()


# -- Monte Carlo: empirical inclusion frequencies match pi -------------------


@pytest.mark.parametrize("method", ["systematic", "sampford"])
def test_empirical_inclusion_frequencies_match_pi(method):
    draws = 4000
    counts = np.zeros(SIZES.size)
    for seed in range(draws):
        result = _draw(method, seed)
        counts += result.selected
    pi = result.pi
    frequency = counts / draws
    standard_error = np.sqrt(pi * (1 - pi) / draws)
    assert np.all(np.abs(frequency - pi) <= 4 * standard_error + 1e-12), (frequency, pi)


def test_sampford_draw_follows_sampford_design():
    # Exact design: p(s) ∝ (n - Σ_s pi) Π_s pi/(1-pi). Compare every sample's frequency.
    pi, _ = inclusion_probabilities([1, 2, 3, 4, 5, 6], 3)
    odds = pi / (1 - pi)
    samples = list(itertools.combinations(range(6), 3))
    design = np.array([(3 - pi[list(s)].sum()) * np.prod(odds[list(s)]) for s in samples])
    design /= design.sum()
    # the design's inclusion probabilities are pi: the theory the sampler relies on
    implied = [sum(p for s, p in zip(samples, design) if unit in s) for unit in range(6)]
    np.testing.assert_allclose(implied, pi)

    rng = np.random.default_rng(11)
    draws = 20000
    index = {s: i for i, s in enumerate(samples)}
    counts = np.zeros(len(samples))
    for _ in range(draws):
        counts[index[tuple(_sampford_draw(pi, 3, rng))]] += 1
    standard_error = np.sqrt(design * (1 - design) / draws)
    assert np.all(np.abs(counts / draws - design) <= 4 * standard_error)


def test_sampford_handles_a_large_stratum_quickly():
    sizes = np.random.default_rng(1).lognormal(size=5000)
    result = select_pps(sizes, 500, method="sampford", random_state=3)
    assert result.n_selected == 500
    assert math.isclose(result.pi.sum(), 500)


# -- seeds, ordering, replacements ------------------------------------------


@pytest.mark.parametrize("method", ["systematic", "sampford", "srs"])
def test_same_seed_same_sample(method):
    first, second = _draw(method, 42, n_replacements=2), _draw(method, 42, n_replacements=2)
    pd.testing.assert_frame_equal(first.to_frame(), second.to_frame())
    assert first.seed == 42
    others = [_draw(method, seed).selected for seed in range(43, 53)]
    assert any((other != first.selected).any() for other in others)


def test_without_seed_the_drawn_seed_reproduces_the_sample():
    first = _draw("systematic", None)
    assert isinstance(first.seed, int)
    again = _draw("systematic", first.seed)
    assert (again.selected == first.selected).all()


def test_generator_is_accepted():
    result = _draw("sampford", np.random.default_rng(5))
    assert result.seed is None and result.n_selected == 7


def test_serpentine_order_on_a_grid():
    # 3 x 3 grid: rows go east, west, east.
    x = np.tile([0.0, 1.0, 2.0], 3)
    y = np.repeat([0.0, 1.0, 2.0], 3)
    shuffled = np.random.default_rng(0).permutation(9)
    order = serpentine_order(x[shuffled], y[shuffled], n_rows=3)
    visited = list(zip(x[shuffled][order], y[shuffled][order]))
    assert visited == [(0, 0), (1, 0), (2, 0), (2, 1), (1, 1), (0, 1), (0, 2), (1, 2), (2, 2)]


def test_serpentine_order_keeps_unlocated_units_last():
    order = serpentine_order([0.0, np.nan, 1.0, 2.0], [0.0, 0.0, np.nan, 0.0])
    assert order.tolist() == [0, 3, 1, 2]


def test_systematic_sample_is_spread_along_the_serpentine_list():
    # 100 equal units on a line: a systematic sample of 10 takes one in each block of 10.
    x = np.arange(100.0)
    result = select_pps(np.ones(100), 10, x=x, y=np.zeros(100), random_state=3)
    chosen = np.flatnonzero(result.selected)
    assert (np.diff(chosen) == 10).all()


def test_replacements_are_drawn_among_the_non_selected():
    result = _draw("systematic", 3, n_replacements=2)
    frame = result.to_frame()
    for label, n in SAMPLE_SIZES.items():
        rows = frame[frame.stratum == label]
        spare = rows[rows.replacement > 0]
        assert sorted(spare.replacement) == [1, 2]
        assert not spare.selected.any()
        assert sorted(spare.selection_order) == [n + 1, n + 2]
        assert (rows.replacement[rows.selected] == 0).all()
        assert (rows.replacement[~rows.selected & (rows.replacement <= 0)] == -1).all()
    # pi and weights of replacements are their main-sample values
    np.testing.assert_allclose(result.pi, _draw("systematic", 3).pi)
    assert result.summary.n_replacements.tolist() == [2, 2]
    assert result.n_replacements_selected == 4


def test_srs_probabilities_and_sizes_optional():
    result = select_pps(None, 3, strata=["a"] * 6 + ["b"] * 4, method="srs", random_state=1)
    np.testing.assert_allclose(result.pi, [0.5] * 6 + [0.75] * 4)
    assert result.n_selected == 6
    np.testing.assert_allclose(result.summary.interval, [2.0, 4 / 3])


def test_numeric_strata_and_mapping():
    result = select_pps([1, 2, 3, 4, 5, 6], {1: 1, 2: 2}, strata=[1, 1, 1, 2, 2, 2], random_state=0)
    assert result.summary.stratum.tolist() == [1, 2]
    assert result.summary.n_selected.tolist() == [1, 2]


def test_sample_sizes_from_column():
    assert sample_sizes_from_column(["a", "a", "b"], [2.0, 2.0, 1]) == {"a": 2, "b": 1}
    with pytest.raises(ClusteringInputError, match="different values"):
        sample_sizes_from_column(["a", "a"], [2, 3])
    with pytest.raises(ClusteringInputError, match="no sample size"):
        sample_sizes_from_column(["a", "a"], [2, None])


def test_report_html_is_self_contained():
    page = selection_report_html(_draw("systematic", 1, n_replacements=1), title="Test <draw>")
    assert page.startswith("<!DOCTYPE html>") and "<svg" in page
    assert "Test &lt;draw&gt;" in page
    assert "<td>a</td><td>10</td><td>3</td>" in page
    assert "http" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")


# -- bad input ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n": 11}, "has 10 cluster"),
        ({"n": 0}, "at least 1"),
        ({"n": 2.5}, "whole number"),
        ({"n": {"a": 3, "b": 4, "c": 2}}, "no clusters"),
        ({"n": {"a": 3}}, "No sample size is given"),
        ({"method": "pps"}, "Unknown selection method"),
        ({"n": 9, "n_replacements": 2}, "replacement"),
        ({"n_replacements": -1}, "at least 0"),
    ],
)
def test_bad_parameters(kwargs, message):
    arguments = {"n": SAMPLE_SIZES, **kwargs}
    with pytest.raises(ClusteringInputError, match=message):
        select_pps(SIZES, strata=STRATA, random_state=0, **arguments)


@pytest.mark.parametrize(
    ("sizes", "message"),
    [
        ([1, 0, 2], "zero, negative"),
        ([1, -3, 2], "zero, negative"),
        ([1, np.nan, 2], "no size"),
        ([1, None, 2], "no size"),
        ([1, np.inf, 2], "infinite"),
    ],
)
def test_bad_sizes(sizes, message):
    with pytest.raises(ClusteringInputError, match=message):
        select_pps(sizes, 1, random_state=0)


def test_bad_strata_and_frame():
    with pytest.raises(ClusteringInputError, match="no stratum"):
        select_pps([1, 2, 3], 1, strata=["a", None, "a"])
    with pytest.raises(ClusteringInputError, match="no stratum"):
        select_pps([1, 2, 3], 1, strata=[1.0, np.nan, 1.0])
    with pytest.raises(ClusteringInputError, match="empty"):
        select_pps([], 1)
    with pytest.raises(ClusteringInputError, match="one value per cluster"):
        select_pps([1, 2, 3], 1, strata=["a", "b"])
    with pytest.raises(ClusteringInputError, match="measure of size"):
        select_pps(None, 1, strata=["a", "b"])
    with pytest.raises(ClusteringInputError, match="both x and y"):
        select_pps([1, 2], 1, x=[0, 1])


def test_selector_is_reusable_and_keeps_its_parameters():
    selector = PsuSelector(2, method="sampford", n_replacements=1, random_state=9)
    first = selector.fit([3, 1, 4, 1, 5, 9])
    second = selector.fit([3, 1, 4, 1, 5, 9])
    assert (first.selected == second.selected).all()
    assert (selector.sample_size, selector.method, selector.n_replacements) == (2, "sampford", 1)
