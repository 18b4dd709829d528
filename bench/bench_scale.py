"""Benchmark the engine and the algorithms on ph_grids and on the synthetic scale series.

Cases (each in its own child process, so peak RSS is the case's own):

* ``core``: the engine alone (``core``, no QGIS). ph_grids: one
  ``TunedClustering.fit`` with the original's parameters, like
  ``bench_ph_grids.py`` (whose loader it imports). Synthetic grids:
  ``core.partitions.cluster_partitions`` over the admin partitions with
  ``--n-jobs`` threads. Timed: building the neighbour graph (guaranteed mode)
  and the fit; not timed: reading the arrays and projecting them.
* ``raster``: ``gridsampling:tunedgridclusteringraster`` through qgis_process,
  raster in (PARTITIONS = the admin polygons), GeoPackage out.
* ``points``: ``gridsampling:tunedgridclustering`` through qgis_process on the
  grid points (PARTITION_FIELD = admin), GeoPackage out.

Modes: ``plain`` (tuned k-means, extra passes over 300) and ``guaranteed``
(plus minimum weight 180, maximum radius 3 km, contiguous clusters; on the
synthetic grids also a bridge distance of 1 km, so that hamlets whose cells
touch no other populated cell join a PSU instead of standing alone). The
synthetic data comes from ``scale_data.py`` (generated once, then reused).

Usage (from the repository root)::

    python3 bench/bench_scale.py                         # 10k, 100k, 1M; all kinds and modes
    python3 bench/bench_scale.py --max-cells 5000000     # the 5M grid too
    python3 bench/bench_scale.py --kinds core --modes plain --sizes 100000
    python3 bench/bench_scale.py --ph                    # only the ph_grids core cases
"""

from __future__ import annotations

import argparse
import math
import resource
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _suite  # noqa: E402
import bench_qgis_process  # noqa: E402
import scale_data  # noqa: E402

KINDS = ("core", "raster", "points")
#: Targets on the 2-core reference machine.
PH_CORE_TARGET_S = {"plain": 1.0, "guaranteed": 2.0}
MILLION_TARGET_S = 60.0
MILLION_TARGET_RSS_MB = 2048.0
GUARANTEED_NEEDS = ("min_cluster_weight", "max_cluster_radius", "contiguity", "adjacency")


# ---------------------------------------------------------------------------
# Core cases (run inside a child process)
# ---------------------------------------------------------------------------


def _load_ph(data_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """lon/lat and population of ph_grids, with bench_ph_grids' loader."""
    import bench_ph_grids

    lon, lat, population, _ = bench_ph_grids.load_lon_lat_population(data_dir)
    return np.column_stack([lon, lat]), population


def core_case(dataset: str, mode: str, n_jobs: int, data_dir: Path) -> dict[str, Any]:
    """Run one core case in this process; its record."""
    _suite.import_plugin()
    case = f"{_dataset_label(dataset)} core {mode}"
    if mode == "guaranteed" and not _suite.estimator_accepts(*GUARANTEED_NEEDS):
        return _suite.not_available(
            case,
            "TunedClustering has no " + "/".join(GUARANTEED_NEEDS),
            target=_core_target(dataset, mode),
        )
    from tuned_grid_clustering.core.adjacency import build_adjacency
    from tuned_grid_clustering.core.partitions import PerPartition, cluster_partitions
    from tuned_grid_clustering.core.projection import project_to_metric

    if dataset == "ph":
        lonlat, population = _load_ph(data_dir)
        partitions = None
        xy, _ = project_to_metric(lonlat[:, 0], lonlat[:, 1], "EPSG:4326", _suite.PH_METRIC_CRS)
    else:
        data = scale_data.ensure_scale_data(int(dataset), verbose=False)
        arrays = data.load_arrays()
        lonlat = np.column_stack([arrays["lon"], arrays["lat"]])
        population, partitions = arrays["population"], arrays["admin"]
        xy, _ = project_to_metric(lonlat[:, 0], lonlat[:, 1], "EPSG:4326")
    params = _suite.core_params(mode, bridge=dataset != "ph")
    n_partitions = 1 if partitions is None else int(np.unique(partitions).size)

    wall_start, cpu_start = time.perf_counter(), time.process_time()
    adjacency = None
    if mode == "guaranteed":
        if partitions is None:
            adjacency = build_adjacency(lonlat, xy_metric=xy).matrix
        else:  # each partition's graph when it is clustered, as the QGIS algorithms do
            adjacency = PerPartition(
                lambda rows: build_adjacency(lonlat[rows], xy_metric=xy[rows]).matrix
            )
    adjacency_s = time.perf_counter() - wall_start
    if partitions is None:
        from tuned_grid_clustering.core.tuned import TunedClustering

        estimator = TunedClustering(**params, n_jobs=n_jobs)
        kwargs = {"adjacency": adjacency} if adjacency is not None else {}
        result = estimator.fit(xy, population, **kwargs)
        clusters, labels, failed = result.clusters, result.labels, 0
        fits = [result]
    else:
        result = cluster_partitions(
            xy,
            population,
            partitions,
            params=params,
            n_jobs=n_jobs,
            fit_kwargs={"adjacency": adjacency} if adjacency is not None else None,
            keep_unit_results=False,
        )
        clusters, labels, failed = result.clusters, result.labels, len(result.failed)
        fits = [outcome.result for outcome in result.outcomes.values() if outcome.ok]
    wall = time.perf_counter() - wall_start
    cpu = time.process_time() - cpu_start
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    # Quality (after the RSS reading). Contiguity as the engine measured it on
    # the graph it used (lattice plus any bridges); else on the lattice.
    share_contiguous = _engine_share_contiguous(fits)
    if share_contiguous is None:
        if adjacency is None or isinstance(adjacency, PerPartition):  # only for this figure
            adjacency = build_adjacency(lonlat, xy_metric=xy).matrix
        share_contiguous = float(np.mean(_suite.share_connected(labels, adjacency)))
    record = _suite.new_record(
        case,
        units=int(xy.shape[0]),
        partitions=n_partitions,
        wall_s=wall,
        cpu_s=cpu,
        peak_rss_mb=peak_rss_mb,
        core_s=wall,
        adjacency_s=adjacency_s if mode == "guaranteed" else 0.0,
        n_jobs=n_jobs,
        failed_partitions=failed,
        target=_core_target(dataset, mode),
        **_suite.quality(clusters["weight"], clusters["radius_m"]),
    )
    record["share_contiguous"] = share_contiguous
    if "status" in clusters.columns:
        record["status_counts"] = {
            str(k): int(v) for k, v in clusters["status"].value_counts().items()
        }
    if dataset == "ph":
        record["target_met"] = wall <= PH_CORE_TARGET_S[mode]
    return record


def _engine_share_contiguous(fits: Sequence[Any]) -> float | None:
    """Share of contiguous clusters over fits, from the engine's quality (None if unknown)."""
    total = contiguous = 0.0
    for fit in fits:
        share = (getattr(fit, "quality", None) or {}).get("share_contiguous")
        if share is None:
            return None
        total += fit.n_clusters
        contiguous += share * fit.n_clusters
    return contiguous / total if total else None


def _dataset_label(dataset: str) -> str:
    return "ph_grids" if dataset == "ph" else f"synthetic {_cells_label(int(dataset))}"


def _cells_label(n: int) -> str:
    if n >= 1_000_000 and n % 1_000_000 == 0:
        return f"{n // 1_000_000}M"
    if n >= 1000 and n % 1000 == 0:
        return f"{n // 1000}k"
    return f"{n:,}"


def _core_target(dataset: str, mode: str) -> str | None:
    return f"<= {PH_CORE_TARGET_S[mode]:g} s" if dataset == "ph" else None


def run_core_case(
    dataset: str,
    mode: str,
    *,
    n_jobs: int = 1,
    data_dir: Path = _suite.DATA_DIR,
    repeat: int = 1,
) -> dict[str, Any]:
    """A core case in a fresh child process (peak RSS of that case only); best of ``repeat``."""

    def once() -> dict[str, Any]:
        record = _suite.run_python_child(
            Path(__file__),
            [
                "--child",
                dataset,
                "--child-mode",
                mode,
                "--n-jobs",
                str(n_jobs),
                "--data",
                str(data_dir),
            ],
        )
        if "case" not in record:
            record = _suite.new_record(f"{_dataset_label(dataset)} core {mode}", **record)
        return record

    return _suite.best_of(repeat, once)


# ---------------------------------------------------------------------------
# qgis_process cases on the synthetic grids
# ---------------------------------------------------------------------------


def qgis_scale_case(
    kind: str, n_cells: int, mode: str, *, n_jobs: int = 2, profile_path: Path | None = None
) -> dict[str, Any]:
    """The raster or points algorithm on one synthetic size, through qgis_process."""
    data = scale_data.ensure_scale_data(n_cells)
    settings = bench_qgis_process.settings(mode, n_jobs=n_jobs, bridge=True)
    settings["INITIAL_TRIALS"] = _suite.INITIAL_TRIALS
    settings["SUBSEQUENT_TRIALS"] = _suite.SUBSEQUENT_TRIALS
    if kind == "raster":
        algorithm = bench_qgis_process.RASTER_ALGORITHM
        parameters = {
            "INPUT": data.raster,
            "BAND": 1,
            "PARTITIONS": data.admin,
            "PARTITION_FIELD": "admin",
            **settings,
        }
    else:
        algorithm = bench_qgis_process.VECTOR_ALGORITHM
        parameters = {
            "INPUT": data.points,
            "WEIGHT_FIELD": "population",
            "PARTITION_FIELD": "admin",
            **settings,
        }
    is_million = n_cells == 1_000_000
    return bench_qgis_process.run_case(
        f"synthetic {_cells_label(n_cells)} qgis_process {kind} {mode}",
        algorithm,
        parameters,
        target=(
            f"<= {MILLION_TARGET_S:g} s, <= {MILLION_TARGET_RSS_MB / 1024:g} GB"
            if is_million and kind == "raster"
            else None
        ),
        target_s=MILLION_TARGET_S if is_million and kind == "raster" else None,
        target_rss_mb=MILLION_TARGET_RSS_MB if is_million and kind == "raster" else None,
        units=data.n_cells,
        partitions=data.n_partitions,
        profile_path=profile_path,
    )


# ---------------------------------------------------------------------------
# Series
# ---------------------------------------------------------------------------


def run_series(
    sizes: Sequence[int],
    kinds: Sequence[str] = KINDS,
    modes: Sequence[str] = _suite.MODES,
    *,
    n_jobs: int = 2,
    repeat: int = 1,
    verbose: bool = True,
    on_record: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Every (size, kind, mode) case, smallest size first; one record each (best of ``repeat``).

    ``on_record`` is called with each record as soon as its case is done.
    """
    records = []
    for n_cells in sorted(sizes):
        scale_data.ensure_scale_data(n_cells)
        for kind in kinds:
            for mode in modes:
                if kind == "core":
                    record = run_core_case(str(n_cells), mode, n_jobs=n_jobs, repeat=repeat)
                else:
                    record = _suite.best_of(
                        repeat,
                        lambda kind=kind, mode=mode, n_cells=n_cells: qgis_scale_case(
                            kind, n_cells, mode, n_jobs=n_jobs
                        ),
                    )
                record.update(series=f"{kind} {mode}", cells=n_cells)
                records.append(record)
                if verbose:
                    print(bench_qgis_process.describe(record), flush=True)
                if on_record is not None:
                    on_record(record)
    return records


def scaling_summary(records: Sequence[dict[str, Any]], low: int = 100_000) -> list[str]:
    """Per series: seconds and MB per million cells, and the log-log slope of time and memory."""
    lines = []
    series: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        if record.get("status") == "ok" and record.get("series"):
            series.setdefault(record["series"], []).append(record)
    for name, items in series.items():
        items = sorted(items, key=lambda r: r["cells"])
        used = [r for r in items if r["cells"] >= low]
        per_million = ", ".join(
            f"{_cells_label(r['cells'])}: {r['wall_s'] / r['cells'] * 1e6:.1f} s/M" for r in items
        )
        text = f"{name:<22} {per_million}"
        if len(used) >= 2:
            first, last = used[0], used[-1]
            ratio = math.log(last["cells"] / first["cells"])
            time_slope = math.log(last["wall_s"] / first["wall_s"]) / ratio
            memory = (last["peak_rss_mb"] - first["peak_rss_mb"]) / (
                (last["cells"] - first["cells"]) / 1e6
            )
            text += (
                f"; time ~ cells^{time_slope:.2f} from {_cells_label(first['cells'])} to "
                f"{_cells_label(last['cells'])} (1.00 = linear); peak RSS +{memory:,.0f} MB "
                f"per million cells ({memory * 1.048576:,.0f} bytes/cell)"
            )
        lines.append(text)
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes",
        type=int,
        nargs="+",
        default=None,
        help="populated cells (default: 10k, 100k, 1M and 5M up to --max-cells)",
    )
    parser.add_argument(
        "--max-cells",
        type=int,
        default=1_000_000,
        help="largest size of the default series (5000000 for the full series)",
    )
    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS))
    parser.add_argument("--modes", nargs="+", choices=_suite.MODES, default=list(_suite.MODES))
    parser.add_argument(
        "--n-jobs",
        type=int,
        default=None,
        help="threads (default: 2 for the synthetic series, 1 for ph_grids)",
    )
    parser.add_argument("--ph", action="store_true", help="only the ph_grids core cases")
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="runs per case, the fastest is kept (default %(default)s)",
    )
    parser.add_argument("--data", type=Path, default=_suite.DATA_DIR)
    parser.add_argument("--json-out", type=Path)
    # Internal: run one core case in this process (used by run_core_case).
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--child-mode", choices=_suite.MODES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        try:
            record = core_case(args.child, args.child_mode, args.n_jobs or 1, args.data)
        except Exception as error:  # noqa: BLE001 - reported as the case's status
            record = _suite.new_record(
                f"{_dataset_label(args.child)} core {args.child_mode}",
                status=f"failed: {type(error).__name__}: {error}",
            )
        _suite.write_json(args.json_out, record)
        return 0

    print(f"scale benchmark; {_suite.machine_load()}", flush=True)
    if args.ph:
        records = [
            run_core_case(
                "ph", mode, n_jobs=args.n_jobs or 1, data_dir=args.data, repeat=args.repeat
            )
            for mode in args.modes
        ]
        for record in records:
            print(bench_qgis_process.describe(record), flush=True)
        print()
        print(_suite.format_table([_suite.original_row(), *records]))
    else:
        sizes = args.sizes or [n for n in scale_data.SIZES if n <= args.max_cells]
        records = run_series(
            sizes, args.kinds, args.modes, n_jobs=args.n_jobs or 2, repeat=args.repeat
        )
        print()
        print(_suite.format_table(records))
        print()
        print("\n".join(scaling_summary(records)))
    if args.json_out:
        _suite.write_json(args.json_out, records)
    return 0


if __name__ == "__main__":
    sys.exit(main())
