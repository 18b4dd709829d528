"""Shared pieces of the benchmark suite: paths, parameters, measuring, tables.

Not a benchmark itself; imported by ``run_all.py``, ``bench_scale.py``,
``bench_qgis_process.py`` and ``profile_cases.py``.

Every case produces one record (a plain dict, JSON-serialisable) with the
keys of :data:`RECORD_KEYS`; missing figures are None. A case that cannot run
yet (its algorithm or parameter is not there) has ``status`` starting with
``"n/a"``; one that crashed has ``status`` starting with ``"failed"``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
PLUGINS_DIR = REPO / ".build" / "plugins"
DATA_DIR = REPO.parent / "shared" / "data"
RESULTS_DIR = BENCH_DIR / "results"
#: Generated benchmark inputs and outputs (git-ignored, never committed).
WORK_DIR = REPO / ".build" / "bench"
#: The Python with QGIS and the plugin's dependencies on the reference machine.
PYTHON = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable
QGIS_PROCESS = "/usr/bin/qgis_process.bin"

#: The original implementation (IDinsight clustering-aws) on ph_grids with the
#: parameters below, n_jobs=1, 2-core machine; source: ../shared/data/README.md.
ORIGINAL = {
    "wall_s": 31.0,
    "peak_rss_mb": 330.0,
    "clusters": 103,
    "weight_median": 168.0,
    "share_in_range": 0.35,
    "radius_median_m": 1100.0,
    "radius_p90_m": 2800.0,
    "radius_max_m": 3900.0,
}

#: The original project's parameters (both runs).
TARGET_WEIGHT = 240.0
TARGET_RADIUS_M = 1000.0
MAX_WEIGHT = 300.0
MAX_PASSES = 100
INITIAL_TRIALS = 100
SUBSEQUENT_TRIALS = 20
PH_METRIC_CRS = "EPSG:3121"
#: The guaranteed-PSU run adds a weight floor, a radius cap and contiguity.
MIN_WEIGHT = 180.0
#: The original's p90 radius: at least 90% of clusters must fit it.
MAX_RADIUS_M = 2800.0
#: The synthetic grids have rural scatter (hamlets whose cells touch no other
#: populated cell); in guaranteed mode those are linked to their nearest
#: neighbour piece within this gap (the README's example value), so they join
#: a PSU instead of standing alone. ph_grids is one piece: not needed there.
BRIDGE_DISTANCE_M = 1000.0
#: Weight range whose share of clusters is reported (the original's [180, 300]).
RANGE = (MIN_WEIGHT, MAX_WEIGHT)

MODES = ("plain", "guaranteed")

#: Columns of a case record, in table order.
RECORD_KEYS = (
    "case",
    "status",
    "units",
    "partitions",
    "wall_s",
    "cpu_s",
    "peak_rss_mb",
    "clusters",
    "weight_median",
    "share_in_range",
    "weight_share_in_range",
    "share_contiguous",
    "radius_median_m",
    "radius_p90_m",
    "radius_max_m",
    "core_s",
    "adapter_s",
    "adapter_share",
    "outside_s",
    "target",
    "target_met",
)


def new_record(case: str, **values: Any) -> dict[str, Any]:
    """A record with every key of :data:`RECORD_KEYS` (None when unknown)."""
    record: dict[str, Any] = dict.fromkeys(RECORD_KEYS)
    record.update(case=case, status="ok")
    record.update(values)
    return record


def not_available(case: str, why: str, **values: Any) -> dict[str, Any]:
    """The record of a case whose algorithm or parameter is not there (yet)."""
    return new_record(case, status=f"n/a (not available: {why})", **values)


def import_plugin():
    """Import the plugin package as QGIS does: through .build/plugins/tuned_grid_clustering."""
    PLUGINS_DIR.mkdir(parents=True, exist_ok=True)
    link = PLUGINS_DIR / "tuned_grid_clustering"
    if not link.exists():
        with contextlib.suppress(FileExistsError):  # made by another process meanwhile
            link.symlink_to(REPO, target_is_directory=True)
    if str(PLUGINS_DIR) not in sys.path:
        sys.path.insert(0, str(PLUGINS_DIR))
    import tuned_grid_clustering

    return tuned_grid_clustering


def estimator_accepts(*names: str) -> bool:
    """True when core's TunedClustering takes every keyword in ``names``."""
    import inspect

    import_plugin()
    from tuned_grid_clustering.core.tuned import TunedClustering

    accepted = set(inspect.signature(TunedClustering.__init__).parameters)
    accepted |= set(inspect.signature(TunedClustering.fit).parameters)
    return all(name in accepted for name in names)


def core_params(mode: str, *, bridge: bool = False) -> dict[str, Any]:
    """TunedClustering keyword arguments of a mode (``plain`` or ``guaranteed``).

    ``bridge``: in guaranteed mode, link light islands (:data:`BRIDGE_DISTANCE_M`)
    when the engine has ``bridge_distance``.
    """
    params: dict[str, Any] = {
        "desired_cluster_weight": TARGET_WEIGHT,
        "desired_cluster_radius": TARGET_RADIUS_M,
        "max_cluster_weight": MAX_WEIGHT,
        "max_passes": MAX_PASSES,
        "initial_max_trials": INITIAL_TRIALS,
        "subsequent_max_trials": SUBSEQUENT_TRIALS,
        "random_state": 42,
    }
    if mode == "guaranteed":
        params.update(
            min_cluster_weight=MIN_WEIGHT, max_cluster_radius=MAX_RADIUS_M, contiguity=True
        )
        if bridge and estimator_accepts("bridge_distance"):
            params["bridge_distance"] = BRIDGE_DISTANCE_M
    elif mode == "plain" and estimator_accepts("contiguity"):
        params["contiguity"] = False  # the new engine refines by default: not in a plain run
    return params


# ---------------------------------------------------------------------------
# Quality figures
# ---------------------------------------------------------------------------


def quality(
    cluster_weight: Sequence[float],
    cluster_radius: Sequence[float],
    connected: Sequence[bool] | None = None,
) -> dict[str, Any]:
    """Cluster count, weight median, share in :data:`RANGE`, contiguity, radius figures.

    ``share_in_range`` counts clusters; ``weight_share_in_range`` counts
    weight (population): many tiny clusters (islands of a few cells) lower
    the first a lot and the second little.
    """
    weight = np.asarray(cluster_weight, dtype=float)
    radius = np.asarray(cluster_radius, dtype=float)
    if weight.size == 0:
        return {"clusters": 0}
    low, high = RANGE
    figures: dict[str, Any] = {
        "clusters": int(weight.size),
        "weight_median": float(np.median(weight)),
        "share_in_range": float(np.mean((weight >= low) & (weight <= high))),
        "weight_share_in_range": float(
            weight[(weight >= low) & (weight <= high)].sum() / max(weight.sum(), 1e-300)
        ),
        "radius_median_m": float(np.median(radius)),
        "radius_p90_m": float(np.quantile(radius, 0.9)),
        "radius_max_m": float(radius.max()),
    }
    if connected is not None:
        figures["share_contiguous"] = float(np.mean(np.asarray(connected, dtype=bool)))
    return figures


def share_connected(labels: np.ndarray, adjacency: Any) -> np.ndarray:
    """Per cluster code: True when its units are one connected piece of ``adjacency``."""
    import_plugin()
    from tuned_grid_clustering.core.refine import cluster_connectivity

    labels = np.asarray(labels, dtype=np.int64)
    keep = labels >= 0
    if not keep.all():  # units of failed partitions have no cluster
        rows = np.flatnonzero(keep)
        adjacency = adjacency.tocsr()[rows][:, rows]
        labels = labels[rows]
    _, codes = np.unique(labels, return_inverse=True)
    return cluster_connectivity(codes.reshape(-1), adjacency)


# ---------------------------------------------------------------------------
# Child processes
# ---------------------------------------------------------------------------


@dataclass
class ChildRun:
    """A finished child process, with its own resource usage (``os.wait4``)."""

    returncode: int
    wall_s: float
    cpu_s: float
    peak_rss_mb: float
    stdout: str
    stderr: str


def run_child(
    command: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
    cwd: Path = REPO,
) -> ChildRun:
    """Run a command; wall time, CPU time (user + system) and peak RSS of that child only.

    ``os.wait4`` gives the rusage of exactly this child (and its waited-for
    descendants), so peak RSS is per case even when cases run one after
    another from the same parent.
    """
    out_path = WORK_DIR / f"child-{os.getpid()}-{time.monotonic_ns()}"
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with open(f"{out_path}.out", "w+b") as out, open(f"{out_path}.err", "w+b") as err:
        process = subprocess.Popen(
            list(command), stdout=out, stderr=err, env=dict(env) if env else None, cwd=cwd
        )
        deadline = None if timeout is None else started + timeout
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            if deadline is not None and time.perf_counter() > deadline:
                process.kill()
                pid, status, usage = os.wait4(process.pid, 0)
                status = -9
                break
            time.sleep(0.02)
        wall = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status) if status != -9 else -9
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode("utf-8", "replace")
        stderr = err.read().decode("utf-8", "replace")
    for suffix in (".out", ".err"):
        Path(f"{out_path}{suffix}").unlink(missing_ok=True)
    return ChildRun(
        returncode=process.returncode,
        wall_s=wall,
        cpu_s=usage.ru_utime + usage.ru_stime,
        peak_rss_mb=usage.ru_maxrss / 1024,  # KiB on Linux
        stdout=stdout,
        stderr=stderr,
    )


def run_python_child(
    script: Path, arguments: Sequence[str], *, timeout: float | None = None
) -> dict[str, Any] | None:
    """Run ``python3 script arguments --json-out FILE`` and return the record it wrote."""
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    out = WORK_DIR / f"record-{os.getpid()}-{time.monotonic_ns()}.json"
    command = [PYTHON, str(script), *arguments, "--json-out", str(out)]
    child = run_child(command, timeout=timeout)
    record = None
    if out.exists():
        record = json.loads(out.read_text())
        out.unlink()
    if record is None:
        tail = (child.stderr.strip().splitlines() or ["no output"])[-1]
        return {
            "status": f"failed (exit {child.returncode}): {tail}",
            "command": shlex.join(command),
        }
    record.setdefault("process_peak_rss_mb", child.peak_rss_mb)
    return record


def write_json(path: Path | None, record: Any) -> None:
    """Write a record (or a list of them) as JSON, or print it when path is None."""
    text = json.dumps(record, indent=2, default=_json_default)
    if path is None:
        print(text)
    else:
        Path(path).write_text(text + "\n")


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


def best_of(repeat: int, run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run a case ``repeat`` times; the record of the fastest run, with every wall time.

    Other work on the machine only ever adds time, so the fastest of a few
    runs is the best estimate of the case's own cost. A case that is not
    available or fails is not repeated.
    """
    records = []
    for _ in range(max(1, repeat)):
        record = run()
        records.append(record)
        if record.get("status") != "ok":
            return record
    best = min(records, key=lambda r: r["wall_s"])
    if len(records) > 1:
        best["runs_wall_s"] = [round(r["wall_s"], 3) for r in records]
    return best


def machine_load() -> str:
    """The 1, 5 and 15 minute load averages, for the printed header."""
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} / {five:.2f} / {fifteen:.2f} on {os.cpu_count()} CPUs"


# ---------------------------------------------------------------------------
# Printing
# ---------------------------------------------------------------------------

#: (record key, column title, format) of the printed table.
TABLE_COLUMNS = (
    ("case", "case", "{}"),
    ("units", "units", "{:,}"),
    ("partitions", "parts", "{:,}"),
    ("wall_s", "wall s", "{:.2f}"),
    ("cpu_s", "CPU s", "{:.2f}"),
    ("peak_rss_mb", "RSS MB", "{:,.0f}"),
    ("clusters", "clusters", "{:,}"),
    ("weight_median", "w med", "{:.0f}"),
    ("share_in_range", "in range", "{:.0%}"),
    ("weight_share_in_range", "pop in rng", "{:.0%}"),
    ("share_contiguous", "contig", "{:.0%}"),
    ("radius_median_m", "r med m", "{:,.0f}"),
    ("radius_p90_m", "r p90 m", "{:,.0f}"),
    ("core_s", "core s", "{:.2f}"),
    ("adapter_s", "adapter s", "{:.2f}"),
    ("adapter_share", "adapter %", "{:.0%}"),
    ("outside_s", "outside s", "{:.2f}"),
    ("target", "target", "{}"),
    ("target_met", "met", "{}"),
)


def format_value(value: Any, pattern: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    try:
        return pattern.format(value)
    except (ValueError, TypeError):
        return str(value)


def format_table(records: Iterable[Mapping[str, Any]], columns=TABLE_COLUMNS) -> str:
    """A fixed-width text table; cases that did not run show their status instead."""
    records = list(records)
    header = [title for _, title, _ in columns]
    rows: list[list[str]] = []
    notes: list[str] = []
    for record in records:
        status = str(record.get("status") or "ok")
        if status != "ok":
            rows.append([str(record.get("case")), status])
            continue
        rows.append([format_value(record.get(key), pattern) for key, _, pattern in columns])
    widths = [len(title) for title in header]
    for row in rows:
        if len(row) == len(header):
            widths = [max(width, len(cell)) for width, cell in zip(widths, row)]
    lines = [
        "  ".join(
            title.rjust(width) if i else title.ljust(width)
            for i, (title, width) in enumerate(zip(header, widths))
        )
    ]
    lines.append("-" * len(lines[0]))
    for row in rows:
        if len(row) == len(header):
            lines.append(
                "  ".join(
                    cell.rjust(width) if i else cell.ljust(width)
                    for i, (cell, width) in enumerate(zip(row, widths))
                )
            )
        else:
            lines.append(f"{row[0].ljust(widths[0])}  {row[1]}")
    return "\n".join(lines + notes)


def original_row() -> dict[str, Any]:
    """The original's figures as a record, for the table."""
    return new_record(
        "original (clustering-aws), ph_grids",
        units=69_226,
        wall_s=ORIGINAL["wall_s"],
        peak_rss_mb=ORIGINAL["peak_rss_mb"],
        clusters=ORIGINAL["clusters"],
        weight_median=ORIGINAL["weight_median"],
        share_in_range=ORIGINAL["share_in_range"],
        radius_median_m=ORIGINAL["radius_median_m"],
        radius_p90_m=ORIGINAL["radius_p90_m"],
        radius_max_m=ORIGINAL["radius_max_m"],
    )
