"""Benchmark the clustering engine on the shared ph_grids data set.

Runs :class:`TunedClustering` with the original project's parameters
(desired weight 240, desired radius 1000 m, max weight 300, up to 100 passes,
100/20 trials, EPSG:3121) and prints time, memory and cluster statistics
beside the original implementation's figures.

Usage (from the repository root)::

    python3 bench/bench_ph_grids.py [--data DIR] [--n-jobs N] [--random-state S]

The data directory defaults to ``../shared/data`` beside the repository. It
is read, never copied.
"""

from __future__ import annotations

import argparse
import resource
import sqlite3
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
PLUGINS_DIR = REPO / ".build" / "plugins"

# The original implementation (IDinsight clustering-aws) on the same data and
# parameters, n_jobs=1, on a 2-core machine; source: ../shared/data/README.md.
ORIGINAL = {
    "wall time (s)": 31.0,
    "peak RSS (MB)": 330.0,
    "clusters": 103,
    "weight median": 168.0,
    "clusters weighing 180 to 300": 0.35,
    "radius median (m)": 1100.0,
    "radius p90 (m)": 2800.0,
    "radius max (m)": 3900.0,
}


def _import_core():
    """Import the plugin package as QGIS would: through .build/plugins/tuned_grid_clustering."""
    PLUGINS_DIR.mkdir(parents=True, exist_ok=True)
    link = PLUGINS_DIR / "tuned_grid_clustering"
    if not link.exists():
        link.symlink_to(REPO, target_is_directory=True)
    sys.path.insert(0, str(PLUGINS_DIR))
    import tuned_grid_clustering.core as core

    return core


def load_lon_lat_population(data_dir: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """Lon, Lat and population of the grid cells, from GeoParquet or the GeoPackage."""
    parquet = data_dir / "ph_grids.parquet"
    try:
        import pandas as pd

        frame = pd.read_parquet(parquet, columns=["Lon", "Lat", "population"])
        return (
            frame["Lon"].to_numpy(float),
            frame["Lat"].to_numpy(float),
            frame["population"].to_numpy(float),
            parquet.name,
        )
    except (ImportError, ValueError, OSError):
        pass  # no pyarrow/fastparquet: read the GeoPackage's attribute table instead
    gpkg = data_dir / "ph_grid_points.gpkg"
    with sqlite3.connect(f"file:{gpkg}?mode=ro", uri=True) as connection:
        rows = connection.execute(
            "SELECT Lon, Lat, population FROM grid_points ORDER BY fid"
        ).fetchall()
    table = np.asarray(rows, dtype=float)
    return table[:, 0], table[:, 1], table[:, 2], gpkg.name


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data",
        type=Path,
        default=REPO.parent / "shared" / "data",
        help="folder holding ph_grids.parquet / ph_grid_points.gpkg",
    )
    parser.add_argument("--n-jobs", type=int, default=1, help="worker threads (-1: all CPUs)")
    parser.add_argument("--random-state", type=int, default=42, help="seed")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    core = _import_core()
    import_seconds = time.perf_counter() - started

    lon, lat, population, source = load_lon_lat_population(args.data)
    xy, crs = core.project_to_metric(lon, lat, "EPSG:4326", "EPSG:3121")

    estimator = core.TunedClustering(
        desired_cluster_weight=240,
        desired_cluster_radius=1000,
        max_cluster_weight=300,
        max_passes=100,
        initial_max_trials=100,
        subsequent_max_trials=20,
        n_jobs=args.n_jobs,
        random_state=args.random_state,
    )
    wall_start, cpu_start = time.perf_counter(), time.process_time()
    result = estimator.fit(xy, population)
    wall = time.perf_counter() - wall_start
    cpu = time.process_time() - cpu_start
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux

    clusters = result.clusters
    weight = clusters["weight"].to_numpy()
    radius = clusters["radius_m"].to_numpy()
    trials = result.trials
    ours = {
        "wall time (s)": wall,
        "peak RSS (MB)": peak_rss_mb,
        "clusters": len(clusters),
        "weight median": float(np.median(weight)),
        "clusters weighing 180 to 300": float(np.mean((weight >= 180) & (weight <= 300))),
        "radius median (m)": float(np.median(radius)),
        "radius p90 (m)": float(np.quantile(radius, 0.9)),
        "radius max (m)": float(radius.max()),
    }
    extra = {
        "CPU time (s)": cpu,
        "weight p10": float(np.quantile(weight, 0.1)),
        "weight p90": float(np.quantile(weight, 0.9)),
        "units": len(xy),
        "passes": int(clusters["pass"].max()),
        "k chosen in pass 1": result.best_k,
        "trials in pass 1": int((trials["pass"] == 1).sum()),
        "trials in later passes": int((trials["pass"] > 1).sum()),
        "oversized clusters left (> 300)": int((weight > 300).sum()),
    }

    print(f"ph_grids benchmark: {len(xy):,} units from {source}, projected to {crs.name}")
    print(
        f"n_jobs={args.n_jobs}, random_state={args.random_state}; import of core: "
        f"{import_seconds:.2f} s (not included below)"
    )
    print()
    print(f"{'metric':<34}{'this engine':>14}{'original':>12}")
    print("-" * 60)
    for name, value in ours.items():
        print(f"{name:<34}{_format(value, name):>14}{_format(ORIGINAL[name], name):>12}")
    for name, value in extra.items():
        print(f"{name:<34}{_format(value):>14}{'-':>12}")
    print()
    print(
        "original: IDinsight clustering-aws on the same data and parameters, n_jobs=1, "
        "2-core machine (../shared/data/README.md)"
    )
    return 0


def _format(value: float, name: str = "") -> str:
    if isinstance(value, (int, np.integer)):
        return f"{value:,}"
    if name.startswith("clusters weighing"):
        return f"{value:.0%}"
    return f"{value:,.2f}" if abs(value) < 100 else f"{value:,.0f}"


if __name__ == "__main__":
    sys.exit(main())
