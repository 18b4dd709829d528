"""Profile the benchmark cases with cProfile: what bounds each one.

For each case it prints the profiled time split into buckets:

* **k-means fits**: compression of the units, k-means++ seeding, Lloyd
  iterations and the final assignment (``core/tuned.py``: ``_compress``,
  ``_kmeans_labels``);
* **radius computation**: minimum enclosing circles (``core/geometry.py``,
  outside the refinement);
* **Optuna overhead**: creating studies and recording trials
  (``core/search.py``: ``_new_study``, ``_record``);
* **refinement**: the guaranteed-PSU repair (``core/refine.py``);
* **neighbour graph**: ``core/adjacency.py``;
* **other engine**: the rest of ``core`` (search logic, summaries, partitions);
* **adapter** (qgis_process cases only): everything in the algorithm that is
  not ``core``: reading features or raster blocks, projecting, building
  geometries, writing GeoPackages (split by the algorithm's own steps);

then the top functions by own time (``tottime``) and by inclusive time
(``cumtime``). Buckets are inclusive times taken from cProfile's caller
table, so they do not overlap (geometry called by the refinement counts as
refinement). cProfile slows Python-level calls more than NumPy/GEOS/GDAL
calls, so read the shares, not the absolute seconds; ``run_all.py`` gives
the unprofiled times.

Cases run with one thread (cProfile sees only the thread it runs on):

* ``ph-core-plain``, ``ph-core-guaranteed``: the engine on ph_grids;
* ``scale-core-plain``, ``scale-core-guaranteed``: ``cluster_partitions`` on the
  synthetic grid of ``--cells`` cells (default 100k);
* ``ph-qgis-points``, ``ph-qgis-cells``, ``ph-qgis-raster``: guaranteed mode
  through qgis_process (processAlgorithm profiled inside qgis_process);
* ``scale-qgis-raster``, ``scale-qgis-points``: guaranteed mode through
  qgis_process on the synthetic grid of ``--cells`` cells.

Usage (from the repository root)::

    python3 bench/profile_cases.py                        # every case
    python3 bench/profile_cases.py ph-core-guaranteed ph-qgis-points --top 20
    python3 bench/profile_cases.py scale-qgis-raster --cells 1000000

The text goes to stdout and to ``bench/results/profiles.txt`` (with
``--save``); the raw ``.prof`` files stay in ``.build/bench/profiles/``
(open them with ``python3 -m pstats`` or snakeviz).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import re
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _suite  # noqa: E402
import bench_qgis_process  # noqa: E402
import bench_scale  # noqa: E402
import scale_data  # noqa: E402

PROFILE_DIR = _suite.WORK_DIR / "profiles"
# The plugin's own files, imported through .build/plugins/tuned_grid_clustering
# (or straight from the repository); never numpy/core/*.py.
_ROOTS = r"(?:tuned_grid_clustering|" + re.escape(str(_suite.REPO)) + r")"
CORE_FILE = re.compile(_ROOTS + r"[/\\]core[/\\](\w+)\.py$")
ALGORITHM_FILE = re.compile(_ROOTS + r"[/\\]algorithms[/\\](\w+)\.py$")
Key = tuple[str, int, str]


# ---------------------------------------------------------------------------
# Reading a profile
# ---------------------------------------------------------------------------


def _module(key: Key, pattern: re.Pattern) -> str | None:
    match = pattern.search(key[0])
    return match.group(1) if match else None


def core_module(key: Key) -> str | None:
    """``tuned`` for .../core/tuned.py, else None."""
    return _module(key, CORE_FILE)


def entered(stats: dict, inside: Callable[[Key], bool]) -> float:
    """Inclusive seconds spent in functions matching ``inside``, entered from outside them.

    A caller only ever called from inside (an adapter's wrapper around
    ``fit``, a ``sorted`` key) is inside too, so such a detour does not count
    the same time twice; built-ins (``sorted``, ``map``) calling back into
    ``inside`` functions count as inside.
    """
    members = {key for key in stats if inside(key)}
    changed = True
    while changed:  # grow to the callers reached only from inside
        changed = False
        for key, (_, _, _, _, callers) in stats.items():
            if key not in members and callers and all(c in members for c in callers):
                members.add(key)
                changed = True
    total = 0.0
    for key, (_, _, _, _, callers) in stats.items():
        if not inside(key):
            continue
        for caller, (_, _, _, cumulative) in callers.items():
            if caller not in members and caller[0] != "~":
                total += cumulative
    return total


def inclusive(stats: dict, module: str, names: Iterable[str]) -> float:
    """Inclusive seconds of the named functions of one core module (all callers)."""
    names = set(names)
    return sum(
        value[3] for key, value in stats.items() if core_module(key) == module and key[2] in names
    )


def buckets(stats: dict, total: float) -> dict[str, float]:
    """Seconds per bucket (see the module docstring); ``adapter`` only when there is one."""
    engine = entered(stats, lambda key: core_module(key) is not None)
    refinement = entered(stats, lambda key: core_module(key) == "refine")
    adjacency = entered(stats, lambda key: core_module(key) == "adjacency")
    kmeans = inclusive(stats, "tuned", ("_kmeans_labels", "_compress"))
    optuna = inclusive(stats, "search", ("_new_study", "_record"))
    radius = 0.0
    for key, (_, _, _, _, callers) in stats.items():
        if core_module(key) != "geometry":
            continue
        for caller, (_, _, _, cumulative) in callers.items():
            if core_module(caller) not in ("geometry", "refine", "adjacency"):
                radius += cumulative
    named = {
        "k-means fits": kmeans,
        "radius computation": radius,
        "Optuna overhead": optuna,
        "refinement": refinement,
        "neighbour graph": adjacency,
    }
    named["other engine"] = max(0.0, engine - sum(named.values()))
    if total - engine > 0.02 * total:
        named["adapter (I/O, geometry)"] = total - engine
    return named


def adapter_steps(stats: dict) -> dict[str, float]:
    """Inclusive seconds of each call made by ``processAlgorithm`` (the algorithm's steps)."""
    steps: dict[str, float] = {}
    for key, (_, _, _, _, callers) in stats.items():
        for caller, (_, _, _, cumulative) in callers.items():
            if caller[2] == "processAlgorithm" and ALGORITHM_FILE.search(caller[0]):
                name = _short(key)
                steps[name] = steps.get(name, 0.0) + cumulative
    return steps


def _short(key: Key) -> str:
    filename, line, name = key
    if filename == "~":
        return name  # a built-in, e.g. <method 'addFeature' of ...>
    match = CORE_FILE.search(filename) or ALGORITHM_FILE.search(filename)
    if match:
        folder = "core" if CORE_FILE.search(filename) else "algorithms"
        return f"{folder}/{match.group(1)}.py:{name}"
    parts = Path(filename).parts
    tail = "/".join(parts[-2:]) if len(parts) >= 2 else filename
    return f"{tail}:{line}:{name}"


def top_functions(stats: dict, column: int, limit: int) -> list[tuple[str, int, float, float]]:
    """(name, calls, tottime, cumtime) of the ``limit`` largest by tottime (2) or cumtime (3)."""
    rows = [
        (_short(key), value[1], value[2], value[3])
        for key, value in stats.items()
        if not key[2].startswith("<built-in method builtins.exec")
    ]
    index = 2 if column == 2 else 3
    return sorted(rows, key=lambda row: -row[index])[:limit]


def verdict(split: dict[str, float]) -> str:
    """'bound by X (share)' from the largest bucket, with the runner-up."""
    total = sum(split.values()) or 1.0
    ordered = sorted(split.items(), key=lambda item: -item[1])
    first = ordered[0]
    text = f"bound by {first[0]} ({first[1] / total:.0%})"
    if len(ordered) > 1 and ordered[1][1] > 0.15 * total:
        text += f", then {ordered[1][0]} ({ordered[1][1] / total:.0%})"
    return text


def report(name: str, profile_path: Path, top: int, note: str = "") -> str:
    """The text block of one profiled case."""
    stats_object = pstats.Stats(str(profile_path), stream=io.StringIO())
    stats = stats_object.stats  # type: ignore[attr-defined]
    total = stats_object.total_tt  # type: ignore[attr-defined]
    split = buckets(stats, total)
    lines = [f"=== {name}: {total:.2f} s profiled{note}", f"    {verdict(split)}"]
    for bucket, seconds in sorted(split.items(), key=lambda item: -item[1]):
        lines.append(f"    {bucket:<26}{seconds:8.2f} s  {seconds / max(total, 1e-9):6.1%}")
    steps = adapter_steps(stats)
    if steps:
        lines.append("  algorithm steps (inclusive, called by processAlgorithm):")
        for step, seconds in sorted(steps.items(), key=lambda item: -item[1])[:10]:
            lines.append(f"    {step:<58}{seconds:8.2f} s")
    for title, column in (("own time (tottime)", 2), ("inclusive time (cumtime)", 3)):
        lines.append(f"  top {top} by {title}:")
        lines.append(f"    {'function':<64}{'calls':>10}{'tottime':>9}{'cumtime':>9}")
        for function, calls, own, cumulative in top_functions(stats, column, top):
            lines.append(f"    {function[:64]:<64}{calls:>10,}{own:9.2f}{cumulative:9.2f}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# The cases
# ---------------------------------------------------------------------------


def _profile_call(path: Path, function: Callable[[], Any]) -> None:
    profiler = cProfile.Profile()
    profiler.runcall(function)
    profiler.dump_stats(str(path))


def _core_runner(dataset: str, mode: str) -> Callable[[], Any] | None:
    """A no-argument callable running one core case (data loaded beforehand), or None if n/a."""
    _suite.import_plugin()
    if mode == "guaranteed" and not _suite.estimator_accepts(*bench_scale.GUARANTEED_NEEDS):
        return None
    from tuned_grid_clustering.core.adjacency import build_adjacency
    from tuned_grid_clustering.core.partitions import cluster_partitions
    from tuned_grid_clustering.core.projection import project_to_metric
    from tuned_grid_clustering.core.tuned import TunedClustering

    params = _suite.core_params(mode, bridge=dataset != "ph")
    if dataset == "ph":
        lonlat, population = bench_scale._load_ph(_suite.DATA_DIR)
        xy, _ = project_to_metric(lonlat[:, 0], lonlat[:, 1], "EPSG:4326", _suite.PH_METRIC_CRS)

        def run() -> Any:
            kwargs = {}
            if mode == "guaranteed":
                kwargs["adjacency"] = build_adjacency(lonlat, xy_metric=xy).matrix
            return TunedClustering(**params, n_jobs=1).fit(xy, population, **kwargs)

        return run
    arrays = scale_data.ensure_scale_data(int(dataset)).load_arrays()
    lonlat = np.column_stack([arrays["lon"], arrays["lat"]])
    xy, _ = project_to_metric(lonlat[:, 0], lonlat[:, 1], "EPSG:4326")

    def run_partitions() -> Any:
        kwargs = None
        if mode == "guaranteed":
            kwargs = {"adjacency": build_adjacency(lonlat, xy_metric=xy).matrix}
        return cluster_partitions(
            xy, arrays["population"], arrays["admin"], params=params, n_jobs=1, fit_kwargs=kwargs
        )

    return run_partitions


def profile_core(name: str, dataset: str, mode: str, top: int) -> str:
    run = _core_runner(dataset, mode)
    if run is None:
        return f"=== {name}: n/a (not available: TunedClustering has no guaranteed-PSU parameters)"
    path = PROFILE_DIR / f"{name}.prof"
    started = time.perf_counter()
    _profile_call(path, run)
    return report(name, path, top, f" ({time.perf_counter() - started:.2f} s wall with cProfile)")


def profile_qgis(name: str, kind: str, dataset: str, top: int) -> str:
    path = PROFILE_DIR / f"{name}.prof"
    path.unlink(missing_ok=True)
    if dataset == "ph":
        case, algorithm, parameters = bench_qgis_process.ph_case(kind, "guaranteed", n_jobs=1)
        record = bench_qgis_process.run_case(case, algorithm, parameters, profile_path=path)
    else:
        record = bench_scale.qgis_scale_case(
            kind, int(dataset), "guaranteed", n_jobs=1, profile_path=path
        )
    if record.get("status") != "ok" or not path.exists():
        return f"=== {name}: {record.get('status')}"
    note = (
        f" (processAlgorithm inside qgis_process; whole run {record['wall_s']:.2f} s wall, "
        f"{record['peak_rss_mb']:.0f} MB)"
    )
    return report(name, path, top, note)


def cases(cells: int) -> dict[str, Callable[[int], str]]:
    size = str(cells)
    return {
        "ph-core-plain": lambda top: profile_core("ph-core-plain", "ph", "plain", top),
        "ph-core-guaranteed": lambda top: profile_core(
            "ph-core-guaranteed", "ph", "guaranteed", top
        ),
        "scale-core-plain": lambda top: profile_core(
            f"scale-core-plain-{size}", size, "plain", top
        ),
        "scale-core-guaranteed": lambda top: profile_core(
            f"scale-core-guaranteed-{size}", size, "guaranteed", top
        ),
        "ph-qgis-points": lambda top: profile_qgis("ph-qgis-points", "points", "ph", top),
        "ph-qgis-cells": lambda top: profile_qgis("ph-qgis-cells", "cells", "ph", top),
        "ph-qgis-raster": lambda top: profile_qgis("ph-qgis-raster", "raster", "ph", top),
        "scale-qgis-raster": lambda top: profile_qgis(
            f"scale-qgis-raster-{size}", "raster", size, top
        ),
        "scale-qgis-points": lambda top: profile_qgis(
            f"scale-qgis-points-{size}", "points", size, top
        ),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="cases to profile (default: all)")
    parser.add_argument(
        "--cells",
        type=int,
        default=100_000,
        help="size of the synthetic grid for scale-* cases (default %(default)s)",
    )
    parser.add_argument("--top", type=int, default=12, help="functions listed per table")
    parser.add_argument(
        "--save", action="store_true", help="also write the text to bench/results/profiles.txt"
    )
    args = parser.parse_args(argv)
    available = cases(args.cells)
    names = args.names or list(available)
    unknown = [name for name in names if name not in available]
    if unknown:
        parser.error(f"unknown case(s) {', '.join(unknown)}; choose from {', '.join(available)}")
    PROFILE_DIR.mkdir(parents=True, exist_ok=True)
    blocks = [f"cProfile of the benchmark cases; {_suite.machine_load()}"]
    print(blocks[0], flush=True)
    for name in names:
        block = available[name](args.top)
        print(block + "\n", flush=True)
        blocks.append(block)
    if args.save:
        _suite.RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        (_suite.RESULTS_DIR / "profiles.txt").write_text("\n\n".join(blocks) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
