"""``tgc``: cluster population grids from the command line, without QGIS.

``tgc cluster`` clusters one file on this machine (partitions in threads);
``tgc batch`` runs one task per partition on a Dask cluster (a local one by
default, or ``--scheduler tcp://host:port``), resumable and fault tolerant.
Both take the Processing algorithms' parameters and write the same layers
plus a JSON run manifest. Exit codes: 0 done, 1 more partitions failed than
``--max-failed-share`` tolerates, 2 bad input or parameters.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ..core.errors import ClusteringInputError
from .settings import OVERRIDE_FIELD_OPTIONS, RunSettings, SettingsError, parse_value

EXIT_OK = 0
EXIT_FAILED_PARTITIONS = 1
EXIT_BAD_INPUT = 2

# CLI option -> engine parameter.
_ENGINE_OPTIONS = {
    "target_weight": "desired_cluster_weight",
    "radius": "desired_cluster_radius",
    "weight_importance": "weight_importance_factor",
    "max_weight": "max_cluster_weight",
    "min_weight": "min_cluster_weight",
    "max_radius": "max_cluster_radius",
    "contiguity": "contiguity",
    "neighbour_distance": "neighbour_distance",
    "bridge_distance": "bridge_distance",
    "max_passes": "max_passes",
    "initial_trials": "initial_max_trials",
    "subsequent_trials": "subsequent_max_trials",
    "seed": "random_state",
}


def _add_common_arguments(parser: argparse.ArgumentParser) -> None:
    data = parser.add_argument_group("input")
    data.add_argument("--layer", help="layer name in a multi-layer input (GeoPackage)")
    data.add_argument(
        "--weight-field",
        help="field with each unit's weight (population); default: every unit weighs 1",
    )
    data.add_argument(
        "--partition-field",
        help="field whose values split the units into "
        "partitions (strata, admin areas); clusters never cross them",
    )
    data.add_argument("--input-crs", help="CRS of an input without one, e.g. EPSG:4326")

    targets = parser.add_argument_group("cluster targets (as in the Processing algorithms)")
    targets.add_argument(
        "--target-weight",
        type=float,
        required=True,
        help="desired cluster weight (e.g. 240 people)",
    )
    targets.add_argument(
        "--radius", type=float, required=True, help="desired cluster radius, metres (e.g. 1000)"
    )
    targets.add_argument(
        "--weight-importance", type=float, help="weight importance factor of the score (default 1)"
    )
    targets.add_argument(
        "--max-weight", type=float, help="re-cluster clusters heavier than this in extra passes"
    )
    targets.add_argument("--min-weight", type=float, help="minimum cluster weight")
    targets.add_argument(
        "--max-radius", type=float, help="largest cluster radius, metres (a cap; default none)"
    )
    targets.add_argument(
        "--contiguity",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="every cluster is one connected piece (default: on)",
    )
    targets.add_argument(
        "--neighbour-distance",
        type=float,
        help="metres within which irregular points are neighbours (default: inferred)",
    )
    targets.add_argument(
        "--bridge-distance",
        type=float,
        help="link isolated pieces of the data to the nearest other piece within this many "
        "metres (default: no links)",
    )
    targets.add_argument("--max-passes", type=int, help="passes at most (default 1)")
    targets.add_argument("--initial-trials", type=int, help="trials of the first pass")
    targets.add_argument("--subsequent-trials", type=int, help="trials of each extra pass")
    targets.add_argument("--seed", type=int, default=42, help="random seed (default 42)")
    targets.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="any other engine parameter, e.g. --param contiguity=true "
        "(repeatable; VALUE is read as JSON when it parses)",
    )
    for option, param in OVERRIDE_FIELD_OPTIONS.items():
        targets.add_argument(
            f"--{option.replace('_', '-')}", help=f"field with each partition's own {param}"
        )

    space = parser.add_argument_group("geometry")
    space.add_argument(
        "--crs",
        default="auto",
        help='metric CRS for clustering: "auto" (the layer\'s if projected in '
        "metres, else UTM of the partition's centre) or e.g. EPSG:3121",
    )
    space.add_argument(
        "--cluster-shape",
        choices=("auto", "hull", "union"),
        default="auto",
        help="cluster polygons: convex hull or union of the units "
        "(auto: union for polygons, hull for points)",
    )

    run = parser.add_argument_group("run")
    run.add_argument(
        "--max-failed-share",
        type=float,
        default=0.1,
        help="exit with code 1 if more than this share of partitions fails (default 0.1)",
    )
    run.add_argument("--quiet", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tgc",
        description="Tuned Grid Clustering: group weighted grid cells into survey clusters "
        "(PSUs) of a target weight and radius.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    cluster = commands.add_parser(
        "cluster",
        help="cluster one file on this machine",
        description="Cluster one layer on this machine; partitions run in threads.",
    )
    cluster.add_argument(
        "inputs",
        nargs="+",
        help="input layer: GeoParquet (.parquet), GeoPackage etc.; several files or a folder: "
        "one partition per file, named by the file name",
    )
    cluster.add_argument(
        "-o",
        "--output",
        required=True,
        help="output: .gpkg (layers units + clusters) or .parquet "
        "(units; clusters in <stem>.clusters.parquet)",
    )
    cluster.add_argument(
        "--manifest", help="run manifest (JSON); default <output stem>.manifest.json"
    )
    cluster.add_argument(
        "--n-jobs",
        type=int,
        default=1,
        help="partitions clustered at once, in threads (-1: one per core)",
    )
    _add_common_arguments(cluster)

    batch = commands.add_parser(
        "batch",
        help="cluster partitions as tasks on a Dask cluster",
        description="One Dask task per partition: one input file per partition, or files "
        "split by --partition-field. Resumable: finished partitions are skipped.",
    )
    batch.add_argument(
        "inputs", nargs="+", help="input files or folders (every .parquet/.gpkg inside)"
    )
    batch.add_argument(
        "-o",
        "--output-dir",
        required=True,
        help="folder for one output per partition and manifest.json",
    )
    batch.add_argument(
        "--format",
        choices=("parquet", "gpkg"),
        default="parquet",
        help="output format per partition (default parquet)",
    )
    batch.add_argument(
        "--scheduler",
        help="address of a running Dask scheduler, e.g. "
        "tcp://10.0.0.5:8786; default: start a local cluster",
    )
    batch.add_argument(
        "--workers", type=int, help="local cluster: worker processes (default: one per core)"
    )
    _add_common_arguments(batch)

    synthetic = commands.add_parser(
        "synthetic",
        help="write a synthetic population grid (for demos and benchmarks)",
        description="Write populated cells of an invented population grid as points: "
        "cell_id, population, admin (text partition code), urban.",
    )
    synthetic.add_argument("-o", "--output", required=True, help="output .parquet or .gpkg")
    synthetic.add_argument("--cells", type=int, default=8000, help="populated cells (default 8000)")
    synthetic.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    synthetic.add_argument(
        "--admin-cells", type=int, help="populated cells per admin partition (about)"
    )
    return parser


def _version() -> str:
    from .manifest import package_version

    return package_version()


def settings_from_args(args: argparse.Namespace) -> RunSettings:
    """The :class:`RunSettings` that the command-line options describe."""
    params: dict[str, Any] = {}
    for option, name in _ENGINE_OPTIONS.items():
        value = getattr(args, option)
        if value is not None:
            params[name] = value
    for item in args.param:
        if "=" not in item:
            raise SettingsError("--param", f"{item!r} is not NAME=VALUE")
        name, text = item.split("=", 1)
        params[name.strip()] = parse_value(text)
    override_fields = {
        param: getattr(args, option)
        for option, param in OVERRIDE_FIELD_OPTIONS.items()
        if getattr(args, option)
    }
    return RunSettings(
        params=params,
        weight_field=args.weight_field,
        partition_field=args.partition_field,
        override_fields=override_fields,
        crs=args.crs,
        cluster_shape=args.cluster_shape,
        input_crs=args.input_crs,
    )


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _progress_bar(total: int, quiet: bool, desc: str, initial: int = 0) -> Any:
    """A tqdm bar on stderr (partitions done / total, ETA), or a no-op."""
    if quiet:
        return _NoBar()
    try:
        from tqdm import tqdm
    except ImportError:
        return _NoBar()
    return tqdm(total=total, initial=initial, desc=desc, unit="partition", file=sys.stderr)


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def set_postfix_str(self, text: str) -> None:
        pass

    def close(self) -> None:
        pass


def report_failures(summary: dict[str, Any], max_failed_share: float) -> int:
    """Print the failed partitions by name; return the exit code."""
    from ..core.partitions import failed_share_exceeded

    failed = summary.get("failed", {})
    for name, error in failed.items():
        _say(f"partition {name} failed: {error}")
    _say(
        f"{summary['n_ok']} of {summary['n_partitions']} partitions ok, "
        f"{summary['n_failed']} failed; {summary['n_clusters']} clusters."
    )
    if failed_share_exceeded(summary["n_failed"], summary["n_partitions"], max_failed_share):
        _say(
            f"More than {max_failed_share:.0%} of the partitions failed "
            "(--max-failed-share): the run failed."
        )
        return EXIT_FAILED_PARTITIONS
    return EXIT_OK


def _cluster_pieces(args: argparse.Namespace, settings: RunSettings) -> list[tuple[Any, Any]]:
    """(partition value or None, units) to cluster, in input order.

    One file: the whole layer (no partition), or its partitions by field.
    Several files or a folder: one partition per file, named by its stem
    (split further by field if one is given), as ``tgc batch`` does.
    """
    from ..core.partitions import group_partitions, partition_name
    from . import io
    from .batch import expand_inputs

    files = expand_inputs(args.inputs)
    per_file = len(files) > 1 or any(Path(item).is_dir() for item in args.inputs)
    pieces: list[tuple[Any, Any]] = []
    offset = 0
    for path in files:
        io.check_fields(path, settings.fields, args.layer)
        units = io.read_units(path, layer=args.layer)
        # A run-wide row number, to put the units back in input order at the end.
        units.index = range(offset, offset + len(units))
        offset += len(units)
        if settings.partition_field:
            keys, rows_of = group_partitions(
                units[settings.partition_field].astype(object).to_numpy(), len(units)
            )
            pieces.extend((key, units.iloc[rows_of[key]]) for key in keys)
        else:
            pieces.append((path.stem if per_file else None, units))
    names = [None if key is None else partition_name(key) for key, _ in pieces]
    duplicated = sorted({n for n in names if n is not None and names.count(n) > 1})
    if duplicated:
        raise ClusteringInputError(
            f"Partition {duplicated[0]!r} appears in several inputs. Partition names must be "
            "unique across the inputs."
        )
    return pieces


def run_cluster(args: argparse.Namespace, argv: Sequence[str] | None = None) -> int:
    """``tgc cluster``: everything on this machine, partitions in threads."""
    from . import io

    io.require_geo_packages()
    import geopandas as gpd
    import pandas as pd

    from ..core.partitions import partition_name
    from .batch import expand_inputs
    from .job import cluster_units
    from .manifest import new_manifest, write_manifest

    settings = settings_from_args(args)
    output = Path(args.output)
    manifest_path = (
        Path(args.manifest) if args.manifest else output.with_name(output.stem + ".manifest.json")
    )
    started = time.perf_counter()
    pieces = _cluster_pieces(args, settings)
    bar = _progress_bar(len(pieces), args.quiet, "clustering")

    def run_one(piece: tuple[Any, Any]) -> Any:
        key, units = piece
        job = cluster_units(units, key, settings)
        bar.update(1)
        return job

    n_jobs = args.n_jobs if args.n_jobs > 0 else max(1, os.cpu_count() or 1)
    try:
        if n_jobs == 1 or len(pieces) == 1:
            jobs = [run_one(piece) for piece in pieces]
        else:
            with ThreadPoolExecutor(max_workers=min(n_jobs, len(pieces))) as pool:
                jobs = list(pool.map(run_one, pieces))
    finally:
        bar.close()

    # Units back in input order: file by file, rows as read.
    for (_, units), job in zip(pieces, jobs):
        job.units.index = units.index
    out_units = pd.concat([job.units for job in jobs]).sort_index().reset_index(drop=True)
    out_units = gpd.GeoDataFrame(out_units, crs=jobs[0].units.crs)
    clusters = [job.clusters for job in jobs if len(job.clusters)]
    out_clusters = (
        gpd.GeoDataFrame(pd.concat(clusters, ignore_index=True), crs=clusters[0].crs)
        if clusters
        else jobs[0].clusters
    )
    written = io.write_layers(out_units, out_clusters, output)

    manifest = new_manifest(
        command="cluster",
        settings=settings.to_json(),
        inputs=[
            {"path": str(path.resolve()), "sha256": io.sha256_file(path), "layer": args.layer}
            for path in expand_inputs(args.inputs)
        ],
        argv=list(argv) if argv is not None else sys.argv[1:],
        extra={
            "outputs": [{"path": str(p.resolve()), "sha256": io.sha256_file(p)} for p in written],
            "wall_seconds": None,
        },
    )
    for (key, _), job in zip(pieces, jobs):
        manifest["partitions"]["" if key is None else partition_name(key)] = job.entry
    manifest["wall_seconds"] = round(time.perf_counter() - started, 3)
    write_manifest(manifest, manifest_path)
    _say(f"wrote {', '.join(str(p) for p in written)} and {manifest_path}")
    return report_failures(manifest["summary"], args.max_failed_share)


def run_synthetic(args: argparse.Namespace) -> int:
    """``tgc synthetic``: a synthetic country to try the commands on."""
    from . import io

    io.require_geo_packages()
    import geopandas as gpd
    import numpy as np

    from ..core.synthetic import SyntheticGrid, synthetic_population_grid

    grid = synthetic_population_grid(args.cells, seed=args.seed, admin_cells=args.admin_cells)
    units = gpd.GeoDataFrame(
        {
            "cell_id": np.arange(len(grid), dtype=np.int64),
            "population": grid.population.astype(float),
            "admin": SyntheticGrid.admin_label(grid.admin).astype(object),
            "urban": grid.urban.astype(bool),
        },
        geometry=gpd.points_from_xy(grid.lon, grid.lat),
        crs="EPSG:4326",
    )
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    if io.is_parquet(output):
        units.to_parquet(output, index=False)
    else:
        units.to_file(output, layer="grid", engine="pyogrio")
    _say(
        f"wrote {output}: {len(units)} cells, population {grid.total_population:,.0f}, "
        f"{units['admin'].nunique()} admin partitions"
    )
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``tgc`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "cluster":
            return run_cluster(args, argv)
        if args.command == "synthetic":
            return run_synthetic(args)
        from .batch import run_batch

        return run_batch(args, argv)
    except ClusteringInputError as exc:
        _say(f"tgc: error: {exc}")
        return EXIT_BAD_INPUT


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
