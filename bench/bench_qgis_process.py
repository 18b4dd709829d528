"""Benchmark the Processing algorithms through ``qgis_process`` (start-up included).

Cases on the shared ph_grids data with the original project's parameters, in
two modes (``plain``: tuned k-means with extra passes; ``guaranteed``: plus
minimum weight 180, maximum radius 3 km and contiguous clusters):

* ``points``: ``gridsampling:tunedgridclustering`` on ph_grid_points.gpkg;
* ``cells``: the same algorithm on the square cells ph_grid_cells.gpkg;
* ``raster``: ``gridsampling:tunedgridclusteringraster`` on ph_population.tif.

Each run is one ``/usr/bin/qgis_process.bin --json run ...`` child process
(environment of ``tools/qgis_env.sh``: offscreen, throwaway profile, plugin
enabled); its wall time, CPU time and peak RSS are its own (``os.wait4``).
The quality figures are read back from the GeoPackage outputs.

Where the time goes: a small probe loaded through ``PYQGIS_STARTUP`` times,
inside that same qgis_process run, the algorithm (``processAlgorithm``), the
engine (outermost calls into ``core``) and each top-level adapter step
(``read_units``, ``write_units_with_clusters``, ...). So ``core_s`` is the
engine, ``adapter_s`` is the algorithm minus the engine (reading features,
projecting, neighbours, building geometries, writing) and ``outside_s`` is
everything outside the algorithm: QGIS start-up, provider loading, parameter
parsing and exit (``startup_s``, ``shutdown_s``) plus importing numpy,
pandas, scipy and the plugin's modules (``import_s``; the probe
imports them before the algorithm starts, so that they are timed apart).
The probe adds microseconds per call; it only wraps functions, it never
changes what they do.

A case whose algorithm or parameter is missing prints
"n/a (not available: ...)" instead of failing.

Usage (from the repository root)::

    python3 bench/bench_qgis_process.py                    # the six ph_grids cases
    python3 bench/bench_qgis_process.py --inputs raster --modes plain
    python3 bench/bench_qgis_process.py --json-out results.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _suite  # noqa: E402

VECTOR_ALGORITHM = "gridsampling:tunedgridclustering"
RASTER_ALGORITHM = "gridsampling:tunedgridclusteringraster"
INPUTS = ("points", "cells", "raster")
#: Targets on the 2-core reference machine.
PH_TARGET_S = 5.0

# ---------------------------------------------------------------------------
# The probe, run by qgis_process at Python start-up (PYQGIS_STARTUP)
# ---------------------------------------------------------------------------

PROBE_SOURCE = r"""
# Written by bench/bench_qgis_process.py: times the algorithm, the engine and
# the adapter steps inside qgis_process. Only wraps functions.
def _tgc_bench_probe():
    import cProfile
    import functools
    import importlib
    import inspect
    import json
    import os
    import pkgutil
    import sys
    import threading
    import time

    if getattr(sys, "_tgc_bench_probe_installed", False):
        return  # PYQGIS_STARTUP may run twice
    sys._tgc_bench_probe_installed = True
    out_path = os.environ.get("TGC_BENCH_PHASES")
    profile_path = os.environ.get("TGC_BENCH_PROFILE")
    errors = []
    for folder in reversed(os.environ.get("QGIS_PLUGINPATH", "").split(os.pathsep)):
        if folder and folder not in sys.path:
            sys.path.insert(0, folder)
    state = {"thread": None, "adapter_depth": 0, "core_depth": 0, "core": 0.0,
             "core_calls": 0, "phases": {}, "memory": {}}
    page_mb = os.sysconf("SC_PAGE_SIZE") / 2**20

    def memory_mb():  # (peak RSS so far, current RSS), MB
        import resource

        with open("/proc/self/statm") as statm:
            current = int(statm.read().split()[1]) * page_mb
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, current

    def on_algorithm_thread():
        return threading.get_ident() == state["thread"]

    def adapter_timer(function, label):
        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            if state["adapter_depth"] or not on_algorithm_thread():
                return function(*args, **kwargs)
            state["adapter_depth"] += 1
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                state["adapter_depth"] -= 1
                phases = state["phases"]
                phases[label] = phases.get(label, 0.0) + time.perf_counter() - started
                state["memory"][label] = memory_mb()
        wrapper._tgc_bench = True
        return wrapper

    def core_timer(function):
        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            if state["core_depth"] or not on_algorithm_thread():
                return function(*args, **kwargs)
            state["core_depth"] += 1
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                state["core_depth"] -= 1
                state["core"] += time.perf_counter() - started
                state["core_calls"] += 1
        wrapper._tgc_bench = True
        return wrapper

    def modules_of(package_name):
        package = importlib.import_module(package_name)
        found = []
        for info in pkgutil.iter_modules(package.__path__):
            try:
                found.append(importlib.import_module(f"{package_name}.{info.name}"))
            except Exception as error:  # a module being written right now
                errors.append(f"{package_name}.{info.name}: {error!r}")
        return found

    def dump(record):
        if out_path:
            with open(out_path, "a", encoding="utf-8") as stream:
                stream.write(json.dumps(record) + "\n")

    # Importing every module here moves the import of numpy, pandas and scipy
    # out of the algorithm: it is timed and reported on its own.
    import_started = time.perf_counter()
    try:
        core_modules = [m for m in modules_of("tuned_grid_clustering.core")
                        if m.__name__.rsplit(".", 1)[-1] not in ("errors", "dependencies")]
        algorithm_modules = modules_of("tuned_grid_clustering.algorithms")
    except Exception as error:
        dump({"probe_error": repr(error)})
        return
    import_s = time.perf_counter() - import_started

    replaced = {}  # id(original) -> wrapper
    if not profile_path:
        for module in core_modules:
            for name, value in list(vars(module).items()):
                if name.startswith("_") or getattr(value, "__module__", None) != module.__name__:
                    continue
                if inspect.isfunction(value):
                    replaced[id(value)] = core_timer(value)
                    setattr(module, name, replaced[id(value)])
                elif inspect.isclass(value):
                    for attr, member in list(vars(value).items()):
                        if inspect.isfunction(member) and (attr == "fit"
                                                           or not attr.startswith("_")):
                            setattr(value, attr, core_timer(member))
        for module in algorithm_modules:
            for name, value in list(vars(module).items()):
                if (inspect.isfunction(value) and not name.startswith("__")
                        and value.__module__ == module.__name__):
                    replaced[id(value)] = adapter_timer(value, name)
                    setattr(module, name, replaced[id(value)])
        from qgis.core import QgsProcessingAlgorithm as _Algorithm

        for module in algorithm_modules:
            for value in list(vars(module).values()):
                if (inspect.isclass(value) and issubclass(value, _Algorithm)
                        and value.__module__ == module.__name__):
                    for attr, member in list(vars(value).items()):
                        if (inspect.isfunction(member) and not attr.startswith("__")
                                and attr != "processAlgorithm"):
                            setattr(value, attr, adapter_timer(member, attr))
        # Names imported from another module ("from .common import read_units").
        for module in core_modules + algorithm_modules:
            for name, value in list(vars(module).items()):
                if id(value) in replaced and not getattr(value, "_tgc_bench", False):
                    setattr(module, name, replaced[id(value)])

    def wrap_process_algorithm(cls):
        original = cls.processAlgorithm

        @functools.wraps(original)
        def processAlgorithm(self, parameters, context, feedback):
            state.update(thread=threading.get_ident(), core=0.0, core_calls=0, phases={},
                         memory={"(start)": memory_mb()})
            started_epoch, started = time.time(), time.perf_counter()
            error = None
            try:
                if profile_path:
                    profiler = cProfile.Profile()
                    try:
                        return profiler.runcall(original, self, parameters, context, feedback)
                    finally:
                        profiler.dump_stats(profile_path)
                return original(self, parameters, context, feedback)
            except BaseException as exc:
                error = repr(exc)
                raise
            finally:
                dump({
                    "algorithm": self.id(),
                    "algorithm_s": time.perf_counter() - started,
                    "started_epoch": started_epoch,
                    "ended_epoch": time.time(),
                    "core_s": state["core"],
                    "core_calls": state["core_calls"],
                    "phases": state["phases"],
                    "memory_mb": state["memory"],
                    "error": error,
                    "probe_errors": errors,
                    "profiled": bool(profile_path),
                    "import_s": import_s,
                })

        cls.processAlgorithm = processAlgorithm

    from qgis.core import QgsProcessingAlgorithm

    for module in algorithm_modules:
        for value in list(vars(module).values()):
            if (inspect.isclass(value) and issubclass(value, QgsProcessingAlgorithm)
                    and value.__module__ == module.__name__
                    and "processAlgorithm" in vars(value)):
                wrap_process_algorithm(value)


_tgc_bench_probe()
"""


def write_probe(folder: Path) -> Path:
    """Write the PYQGIS_STARTUP probe into ``folder``; its path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "tgc_bench_probe.py"
    path.write_text(PROBE_SOURCE)
    return path


# ---------------------------------------------------------------------------
# qgis_process environment and algorithm help
# ---------------------------------------------------------------------------

_ENV: dict[str, str] | None = None
_HELP: dict[str, set[str] | None] = {}


def qgis_environment() -> dict[str, str]:
    """The environment of ``tools/qgis_env.sh`` (sourced once; profile reused)."""
    global _ENV
    if _ENV is None:
        config = _suite.WORK_DIR / "qgis-profile"
        config.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, TGC_QGIS_CONFIG=str(config))
        dump = subprocess.run(
            ["bash", "-c", ". tools/qgis_env.sh >&2 && env -0"],
            cwd=_suite.REPO,
            env=env,
            capture_output=True,
            check=True,
        ).stdout
        _ENV = dict(item.split("=", 1) for item in dump.decode().split("\0") if "=" in item)
        _ENV.setdefault("XDG_RUNTIME_DIR", str(_suite.WORK_DIR / "xdg-runtime"))
        Path(_ENV["XDG_RUNTIME_DIR"]).mkdir(mode=0o700, parents=True, exist_ok=True)
    return dict(_ENV)


def algorithm_parameters(algorithm: str) -> set[str] | None:
    """Parameter names of an algorithm (``qgis_process help``), None when it is missing."""
    if algorithm not in _HELP:
        done = subprocess.run(
            [_suite.QGIS_PROCESS, "help", algorithm],
            env=qgis_environment(),
            capture_output=True,
            text=True,
        )
        names: set[str] | None = None
        if done.returncode == 0 and "Arguments" in done.stdout:
            names = set()
            in_arguments = False
            for line in done.stdout.splitlines():
                if line.startswith("Arguments"):
                    in_arguments = True
                elif line.startswith("Outputs"):
                    in_arguments = False
                elif in_arguments and line[:1].isalpha() and ":" in line:
                    names.add(line.split(":", 1)[0].strip())
        _HELP[algorithm] = names
    return _HELP[algorithm]


def missing_parameters(algorithm: str, parameters: Mapping[str, Any]) -> str | None:
    """Why the algorithm cannot run these parameters (None when it can)."""
    names = algorithm_parameters(algorithm)
    if names is None:
        return f"no algorithm {algorithm}"
    missing = sorted(set(parameters) - names)
    if missing:
        return f"{algorithm} has no {', '.join(missing)}"
    return None


# ---------------------------------------------------------------------------
# Reading the outputs back
# ---------------------------------------------------------------------------


def _feature_table(connection: sqlite3.Connection) -> tuple[str, str | None]:
    table = connection.execute(
        "SELECT table_name FROM gpkg_contents WHERE data_type = 'features' LIMIT 1"
    ).fetchone()[0]
    geometry = connection.execute(
        "SELECT column_name FROM gpkg_geometry_columns WHERE table_name = ?", (table,)
    ).fetchone()
    return table, geometry[0] if geometry else None


def _columns(connection: sqlite3.Connection, table: str) -> list[str]:
    return [row[1] for row in connection.execute(f'PRAGMA table_info("{table}")')]


def read_cluster_table(path: Path) -> dict[str, np.ndarray]:
    """weight and radius_m of every cluster of an OUTPUT_CLUSTERS GeoPackage."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as connection:
        table, _ = _feature_table(connection)
        rows = connection.execute(f'SELECT weight, radius_m FROM "{table}"').fetchall()
    array = np.asarray(rows, dtype=float).reshape(-1, 2)
    return {"weight": array[:, 0], "radius_m": array[:, 1]}


_ENVELOPE_BYTES = {0: 0, 1: 32, 2: 48, 3: 48, 4: 64}


def _gpkg_xy(blob: bytes) -> tuple[float, float]:
    """A representative x, y of a GeoPackage geometry: its envelope's centre, or the point."""
    flags = blob[3]
    order = "<" if flags & 1 else ">"
    envelope = (flags >> 1) & 0b111
    if envelope:
        min_x, max_x, min_y, max_y = struct.unpack_from(f"{order}4d", blob, 8)
        return (min_x + max_x) / 2, (min_y + max_y) / 2
    start = 8
    wkb_order = "<" if blob[start] == 1 else ">"
    return struct.unpack_from(f"{wkb_order}2d", blob, start + 5)  # a WKB point


def units_contiguity(path: Path) -> np.ndarray | None:
    """Per cluster: connected on the 8-neighbour grid of the OUTPUT units (None if not a grid)."""
    _suite.import_plugin()
    from tuned_grid_clustering.core.adjacency import infer_lattice, lattice_adjacency

    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as connection:
        table, geometry = _feature_table(connection)
        if geometry is None or "cluster_id" not in _columns(connection, table):
            return None
        rows = connection.execute(f'SELECT "{geometry}", cluster_id FROM "{table}"').fetchall()
    xy = np.array([_gpkg_xy(blob) for blob, _ in rows], dtype=float)
    ids = np.array(["" if cid is None else cid for _, cid in rows], dtype=object)
    lattice = infer_lattice(xy)
    if lattice is None:
        return None
    adjacency = lattice_adjacency(xy, lattice=lattice).matrix
    _, labels = np.unique(ids.astype(str), return_inverse=True)
    labels = labels.reshape(-1).astype(np.int64)
    labels[ids == ""] = -1
    return _suite.share_connected(labels, adjacency)


def output_quality(
    clusters_path: Path, units_path: Path, results: Mapping[str, Any]
) -> dict[str, Any]:
    """Quality figures of a run from its GeoPackage outputs (and its numeric outputs)."""
    table = read_cluster_table(clusters_path)
    figures = _suite.quality(table["weight"], table["radius_m"])
    share = results.get("SHARE_CONTIGUOUS")
    if isinstance(share, (int, float)):
        figures["share_contiguous"] = float(share)
    else:
        connected = units_contiguity(units_path)
        if connected is not None:
            figures["share_contiguous"] = float(np.mean(connected))
    return figures


# ---------------------------------------------------------------------------
# One qgis_process run
# ---------------------------------------------------------------------------


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def run_case(
    case: str,
    algorithm: str,
    parameters: Mapping[str, Any],
    *,
    target: str | None = None,
    target_s: float | None = None,
    target_rss_mb: float | None = None,
    units: int | None = None,
    partitions: int | None = None,
    profile_path: Path | None = None,
    timeout: float | None = 3600.0,
    keep_outputs: bool = False,
) -> dict[str, Any]:
    """Run one algorithm through qgis_process; the case record.

    ``parameters`` are the inputs and settings; OUTPUT, OUTPUT_CLUSTERS and
    OUTPUT_REPORT are added (GeoPackages and an HTML file in a temporary
    folder, removed afterwards unless ``keep_outputs``).
    """
    extra = {"algorithm": algorithm, "units": units, "partitions": partitions, "target": target}
    why = missing_parameters(algorithm, parameters)
    if why:
        return _suite.not_available(case, why, **extra)
    _suite.WORK_DIR.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="qgis-case-", dir=_suite.WORK_DIR))
    outputs = {
        "OUTPUT": folder / "units.gpkg",
        "OUTPUT_CLUSTERS": folder / "clusters.gpkg",
        "OUTPUT_REPORT": folder / "report.html",
    }
    phases_path = folder / "phases.jsonl"
    env = qgis_environment()
    env["PYQGIS_STARTUP"] = str(write_probe(folder))
    env["TGC_BENCH_PHASES"] = str(phases_path)
    if profile_path is not None:
        env["TGC_BENCH_PROFILE"] = str(profile_path)
    arguments = [f"{name}={_value(value)}" for name, value in {**parameters, **outputs}.items()]
    command = [_suite.QGIS_PROCESS, "--json", "run", algorithm, "--", *arguments]
    spawned = time.time()
    child = _suite.run_child(command, env=env, timeout=timeout)
    exited = spawned + child.wall_s
    record = _suite.new_record(
        case,
        wall_s=child.wall_s,
        cpu_s=child.cpu_s,
        peak_rss_mb=child.peak_rss_mb,
        **extra,
    )
    try:
        payload = json.loads(child.stdout[child.stdout.find("{") :]) if "{" in child.stdout else {}
    except json.JSONDecodeError:
        payload = {}
    results = payload.get("results") or {}
    if child.returncode != 0 or not results:
        lines = [line for line in (child.stderr + child.stdout).splitlines() if line.strip()]
        errors = [line for line in lines if "rror" in line or "xception" in line]
        record["status"] = (
            f"failed (exit {child.returncode}): {(errors or lines or ['?'])[-1][:200]}"
        )
        record["stderr_tail"] = lines[-15:]
    else:
        record.update(output_quality(outputs["OUTPUT_CLUSTERS"], outputs["OUTPUT"], results))
        record["algorithm_outputs"] = {
            key: value for key, value in results.items() if not str(key).startswith("OUTPUT")
        }
        if units is None:
            record["units"] = _count_features(outputs["OUTPUT"])
    probe = _read_probe(phases_path)
    if probe:
        record["algorithm_s"] = probe["algorithm_s"]
        record["phases"] = probe["phases"]
        record["memory_mb"] = probe.get("memory_mb")
        if not probe.get("profiled"):
            record["core_s"] = probe["core_s"]
            record["adapter_s"] = probe["algorithm_s"] - probe["core_s"]
        record["import_s"] = probe.get("import_s", 0.0)
        record["startup_s"] = probe["started_epoch"] - spawned - record["import_s"]
        record["shutdown_s"] = max(0.0, exited - probe["ended_epoch"])
        record["outside_s"] = max(0.0, record["wall_s"] - probe["algorithm_s"])
        if record.get("adapter_s") is not None:
            record["adapter_share"] = record["adapter_s"] / record["wall_s"]
        if probe.get("probe_errors"):
            record["probe_errors"] = probe["probe_errors"]
    if record["status"] == "ok":
        met = []
        if target_s is not None:
            met.append(record["wall_s"] <= target_s)
        if target_rss_mb is not None:
            met.append(record["peak_rss_mb"] <= target_rss_mb)
        record["target_met"] = all(met) if met else None
    if not keep_outputs:
        shutil.rmtree(folder, ignore_errors=True)
    else:
        record["outputs"] = {name: str(path) for name, path in outputs.items()}
    return record


def _read_probe(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    runs = [line for line in lines if "algorithm_s" in line]
    return runs[-1] if runs else None


def _count_features(path: Path) -> int | None:
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as connection:
            table, _ = _feature_table(connection)
            return int(connection.execute(f'SELECT COUNT(*) FROM "{table}"').fetchone()[0])
    except (sqlite3.Error, TypeError):
        return None


# ---------------------------------------------------------------------------
# Parameters of the cases
# ---------------------------------------------------------------------------


def settings(
    mode: str, *, n_jobs: int = 1, distance_crs: str | None = None, bridge: bool = False
) -> dict[str, Any]:
    """Targets and constraints of a mode, as algorithm parameters.

    ``bridge``: in guaranteed mode, BRIDGE_DISTANCE (for data with islands).
    """
    values: dict[str, Any] = {
        "TARGET_WEIGHT": _suite.TARGET_WEIGHT,
        "TARGET_RADIUS": _suite.TARGET_RADIUS_M,
        "MAX_WEIGHT": _suite.MAX_WEIGHT,
        "MAX_PASSES": _suite.MAX_PASSES,
        "CONTIGUITY": mode == "guaranteed",
        "N_JOBS": n_jobs,
    }
    if mode == "guaranteed":
        values["MIN_WEIGHT"] = _suite.MIN_WEIGHT
        values["MAX_RADIUS"] = _suite.MAX_RADIUS_M
        if bridge:
            values["BRIDGE_DISTANCE"] = _suite.BRIDGE_DISTANCE_M
    if distance_crs:
        values["DISTANCE_CRS"] = distance_crs
    return values


def ph_case(input_kind: str, mode: str, data_dir: Path = _suite.DATA_DIR, n_jobs: int = 1):
    """(case name, algorithm, parameters) of one ph_grids case."""
    base = settings(mode, n_jobs=n_jobs, distance_crs=_suite.PH_METRIC_CRS)
    base["INITIAL_TRIALS"] = _suite.INITIAL_TRIALS
    base["SUBSEQUENT_TRIALS"] = _suite.SUBSEQUENT_TRIALS
    name = f"ph_grids qgis_process {input_kind} {mode}"
    if input_kind == "raster":
        raster = {"INPUT": data_dir / "ph_population.tif", "BAND": 1}
        return name, RASTER_ALGORITHM, {**raster, **base}
    layer = "ph_grid_points.gpkg" if input_kind == "points" else "ph_grid_cells.gpkg"
    return name, VECTOR_ALGORITHM, {"INPUT": data_dir / layer, "WEIGHT_FIELD": "population", **base}


def run_ph_cases(
    inputs: Sequence[str] = INPUTS,
    modes: Sequence[str] = _suite.MODES,
    *,
    n_jobs: int = 1,
    data_dir: Path = _suite.DATA_DIR,
    repeat: int = 1,
    verbose: bool = True,
) -> list[dict[str, Any]]:
    """The ph_grids cases through qgis_process, one record each (best of ``repeat``)."""
    records = []
    for input_kind in inputs:
        for mode in modes:
            name, algorithm, parameters = ph_case(input_kind, mode, data_dir, n_jobs)
            record = _suite.best_of(
                repeat,
                lambda name=name, algorithm=algorithm, parameters=parameters: run_case(
                    name,
                    algorithm,
                    parameters,
                    target=f"<= {PH_TARGET_S:g} s",
                    target_s=PH_TARGET_S,
                    units=69_226,
                    partitions=1,
                ),
            )
            records.append(record)
            if verbose:
                print(describe(record), flush=True)
    return records


def describe(record: Mapping[str, Any]) -> str:
    """One line: the case and its time, memory, and where the time went."""
    if record.get("status") != "ok":
        return f"{record['case']}: {record.get('status')}"
    text = (
        f"{record['case']}: {record['wall_s']:.2f} s wall, {record['cpu_s']:.2f} s CPU, "
        f"{record['peak_rss_mb']:.0f} MB, {record.get('clusters')} clusters"
    )
    if record.get("algorithm_s") is not None:
        text += (
            f"; start-up {record['startup_s']:.2f} s + imports {record.get('import_s') or 0:.2f} s"
            f", algorithm {record['algorithm_s']:.2f} s"
        )
        if record.get("core_s") is not None:
            text += f" (core {record['core_s']:.2f} s, adapter {record['adapter_s']:.2f} s)"
        phases = record.get("phases") or {}
        top = sorted(phases.items(), key=lambda item: -item[1])[:5]
        if top:
            text += "; " + ", ".join(f"{name} {seconds:.2f}" for name, seconds in top)
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--inputs", nargs="+", choices=INPUTS, default=list(INPUTS))
    parser.add_argument("--modes", nargs="+", choices=_suite.MODES, default=list(_suite.MODES))
    parser.add_argument("--n-jobs", type=int, default=1, help="N_JOBS (default 1, as the original)")
    parser.add_argument("--data", type=Path, default=_suite.DATA_DIR)
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="runs per case, the fastest is kept (default %(default)s)",
    )
    parser.add_argument("--json-out", type=Path, help="write the records here as JSON")
    args = parser.parse_args(argv)
    print(f"qgis_process cases on ph_grids; {_suite.machine_load()}", flush=True)
    records = run_ph_cases(
        args.inputs, args.modes, n_jobs=args.n_jobs, data_dir=args.data, repeat=args.repeat
    )
    print()
    print(_suite.format_table([_suite.original_row(), *records]))
    if args.json_out:
        _suite.write_json(args.json_out, records)
    return 0


if __name__ == "__main__":
    sys.exit(main())
