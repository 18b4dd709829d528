"""Benchmark: guaranteed-PSU refinement on the Philippines grid (ph_grids).

Starts from a weighted k-means (k = total / target, sklearn KMeans, seed 42,
n_init=1; ``--tuned`` starts from the tuned engine instead) and refines it with
``refine_partition`` under the original project's parameters (target 240,
range [180, 300]) and a radius cap. Prints time and quality for the start and
after refinement.

Run from the repository root::

    /usr/bin/python3 bench/bench_refine.py [--max-radius 2800] [--repeat 3] [--tuned]

Needs ../shared/data/ph_grid_points.gpkg (read with sqlite3: Lon/Lat are the
lattice, metric coordinates via pyproj EPSG:3121).
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "ph_grid_points.gpkg"
sys.path.insert(0, str(REPO / ".build" / "plugins"))

from tuned_grid_clustering.core.adjacency import build_adjacency  # noqa: E402
from tuned_grid_clustering.core.refine import (  # noqa: E402
    refine_partition,
    summarize_partition,
)

TARGET, MIN_WEIGHT, MAX_WEIGHT = 240.0, 180.0, 300.0


def load() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lon/lat, metric EPSG:3121 coordinates and population of every grid point."""
    from pyproj import Transformer

    with sqlite3.connect(f"file:{DATA}?mode=ro", uri=True) as connection:
        rows = connection.execute(
            "SELECT Lon, Lat, population FROM grid_points ORDER BY fid"
        ).fetchall()
    table = np.asarray(rows, dtype=float)
    lonlat, weights = table[:, :2], table[:, 2]
    x, y = Transformer.from_crs(4326, 3121, always_xy=True).transform(lonlat[:, 0], lonlat[:, 1])
    return lonlat, np.column_stack([x, y]), weights


def report(title: str, summary, seconds: float | None = None) -> None:
    timing = f" ({seconds:.3f} s)" if seconds is not None else ""
    print(f"--- {title}{timing}")
    print(summary.format())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--max-radius", type=float, default=2800.0, help="radius cap, metres")
    parser.add_argument("--repeat", type=int, default=3, help="timed refinement runs")
    parser.add_argument("--k", type=int, default=None, help="k-means clusters (default total/240)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--tuned",
        action="store_true",
        help="start from TunedClustering(240, 1000 m) instead of plain k-means",
    )
    args = parser.parse_args()

    lonlat, xy, weights = load()
    print(f"{len(weights)} units, total weight {weights.sum():.0f}, max unit {weights.max():.2f}")

    start = time.perf_counter()
    adjacency = build_adjacency(lonlat, xy_metric=xy)
    print(
        f"{adjacency.describe()}: {time.perf_counter() - start:.3f} s, "
        f"{adjacency.n_components} component(s)"
    )

    start = time.perf_counter()
    if args.tuned:
        from tuned_grid_clustering.core.tuned import TunedClustering

        tuned = TunedClustering(TARGET, 1000.0, random_state=args.seed).fit(xy, weights)
        start_labels, title = tuned.labels, f"tuned start, k={tuned.n_clusters}"
    else:
        from sklearn.cluster import KMeans

        k = args.k or round(weights.sum() / TARGET)
        kmeans = KMeans(n_clusters=k, random_state=args.seed, n_init=1)
        start_labels = kmeans.fit(xy, sample_weight=weights).labels_
        title = f"k-means start, k={k}"
    start_seconds = time.perf_counter() - start
    constraints = dict(min_weight=MIN_WEIGHT, max_weight=MAX_WEIGHT, max_radius=args.max_radius)
    report(
        title,
        summarize_partition(start_labels, weights, xy, adjacency.matrix, **constraints),
        start_seconds,
    )

    timings = []
    result = None
    for _ in range(max(1, args.repeat)):
        start = time.perf_counter()
        result = refine_partition(
            start_labels, xy, weights, adjacency.matrix, target_weight=TARGET, **constraints
        )
        timings.append(time.perf_counter() - start)
    report(
        f"refined (max_radius={args.max_radius:.0f} m), best of {len(timings)}",
        result.summary,
        min(timings),
    )
    print(f"all timings: {', '.join(f'{t:.3f}' for t in timings)} s")
    print(
        f"unchanged clusters kept: {int(result.unchanged.sum())}; "
        f"parents with several children: "
        f"{int((np.unique(result.parent, return_counts=True)[1] > 1).sum())}"
    )


if __name__ == "__main__":
    main()
