"""Run the whole benchmark suite and print one table: the one command.

Usage (from the repository root, with the QGIS Python)::

    python3 bench/run_all.py            # ph_grids + synthetic 10k, 100k, 1M (about 10 min)
    python3 bench/run_all.py --full     # ... and 5M (about 30 min more)
    python3 bench/run_all.py --quick    # ph_grids + 10k, 100k; one run per case

What runs (every case in its own child process, so peak RSS is its own):

1. ph_grids (69,226 cells, ../shared/data) with the original project's
   parameters, ``plain`` and ``guaranteed`` (min 180, max 300, radius cap
   3 km, contiguous): the engine alone, then ``qgis_process`` on points,
   cells and the raster (start-up included). Best of ``--repeat`` runs.
2. The synthetic scale series (``scale_data.py``, generated once into
   ``.build/bench/data``): 10k, 100k, 1M (and 5M with ``--full``) populated
   cells in admin partitions of about 25k cells, through the engine
   (``cluster_partitions``) and ``qgis_process`` (raster in / points in,
   GeoPackage out), 2 threads; guaranteed mode adds a 1 km bridge distance
   there (the grids have isolated hamlets).

It prints the table (the original's figures first), the targets and
whether they hold, the time split (engine / adapter / outside the
algorithm) and the scaling per million cells; writes
``bench/results/latest.txt`` and ``latest.json``; and draws
``docs/scaling.svg``. A case whose algorithm or parameter is not available
prints "n/a (not available: ...)". For where the time goes inside each case,
run ``bench/profile_cases.py``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _suite  # noqa: E402
import bench_qgis_process  # noqa: E402
import bench_scale  # noqa: E402
import scale_data  # noqa: E402

SVG_PATH = _suite.REPO / "docs" / "scaling.svg"
#: "About linear": time grows at most like cells^LINEAR_SLOPE from 100k up.
LINEAR_SLOPE = 1.15
#: "Peak memory grows with one partition plus the output, never the whole country
#: several times over": a few numeric arrays over all cells (coordinates, weight,
#: labels: ~50-100 bytes a cell) are fine; Python objects per cell (~100+ bytes
#: each, several of them) are not. Peak RSS growth per cell above this misses.
MAX_BYTES_PER_CELL = 200


def environment_lines() -> list[str]:
    """Machine, versions and commit, for the header."""
    lines = [
        f"date {datetime.datetime.now().isoformat(timespec='seconds')}; "
        f"{platform.platform()}; {_suite.machine_load()}",
    ]
    versions = []
    for module in ("numpy", "scipy", "pandas", "optuna", "shapely", "pyproj"):
        try:
            versions.append(f"{module} {__import__(module).__version__}")
        except ImportError:
            versions.append(f"{module} missing")
    lines.append(f"Python {platform.python_version()}; " + ", ".join(versions))
    try:
        qgis = subprocess.run(
            [_suite.QGIS_PROCESS, "--version"],
            capture_output=True,
            text=True,
            timeout=60,
            env=bench_qgis_process.qgis_environment(),
        ).stdout
        lines.append(" ".join(line.strip() for line in qgis.splitlines() if "QGIS" in line))
    except (OSError, subprocess.SubprocessError):
        lines.append("qgis_process not found")
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            cwd=_suite.REPO,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain"], capture_output=True, text=True, cwd=_suite.REPO
        ).stdout.strip()
        lines.append(f"commit {commit}{' + uncommitted changes' if dirty else ''}")
    except OSError:
        pass
    return lines


# ---------------------------------------------------------------------------
# Targets
# ---------------------------------------------------------------------------


def _find(records: Sequence[dict[str, Any]], case: str) -> dict[str, Any] | None:
    return next((r for r in records if r.get("case") == case), None)


def _slope(
    records: Sequence[dict[str, Any]], series: str, key: str = "wall_s"
) -> tuple[float, str] | None:
    """Log-log slope of ``key`` against cells from 100k to the largest size of a series."""
    import math

    items = sorted(
        (
            r
            for r in records
            if r.get("series") == series
            and r.get("status") == "ok"
            and r.get("cells", 0) >= 100_000
        ),
        key=lambda r: r["cells"],
    )
    if len(items) < 2:
        return None
    first, last = items[0], items[-1]
    slope = math.log(last[key] / first[key]) / math.log(last["cells"] / first["cells"])
    return slope, f"{first['cells']:,} -> {last['cells']:,} cells"


def _growth_per_cell(records: Sequence[dict[str, Any]], series: str) -> float | None:
    """Peak RSS growth in bytes per cell from 100k to the largest size of a series."""
    items = sorted(
        (
            r
            for r in records
            if r.get("series") == series and r.get("status") == "ok" and r["cells"] >= 100_000
        ),
        key=lambda r: r["cells"],
    )
    if len(items) < 2:
        return None
    first, last = items[0], items[-1]
    return (last["peak_rss_mb"] - first["peak_rss_mb"]) * 2**20 / (last["cells"] - first["cells"])


def target_lines(records: Sequence[dict[str, Any]]) -> list[str]:
    """One line per target of the issue: the figure and whether it holds."""
    lines = []

    def line(label: str, record: dict[str, Any] | None, figure: str, met: bool | None) -> None:
        if record is None:
            lines.append(f"  [ -- ] {label}: not run")
        elif record.get("status") != "ok":
            lines.append(f"  [ -- ] {label}: {record.get('status')}")
        else:
            lines.append(f"  [{' ok ' if met else 'MISS'}] {label}: {figure}")

    for mode, limit in bench_scale.PH_CORE_TARGET_S.items():
        record = _find(records, f"ph_grids core {mode}")
        wall = record.get("wall_s") if record else None
        line(
            f"ph_grids in core, {mode} <= {limit:g} s",
            record,
            f"{wall:.2f} s" if wall is not None else "",
            wall is not None and wall <= limit,
        )
    for kind in bench_qgis_process.INPUTS:
        for mode in _suite.MODES:
            record = _find(records, f"ph_grids qgis_process {kind} {mode}")
            wall = record.get("wall_s") if record else None
            figure = ""
            if wall is not None:
                figure = f"{wall:.2f} s"
                if record.get("outside_s") is not None:
                    core_s = record.get("core_s") or 0.0
                    adapter_s = record.get("adapter_s") or 0.0
                    figure += (
                        f" (outside the algorithm {record['outside_s']:.2f} s, engine "
                        f"{core_s:.2f} s, adapter {adapter_s:.2f} s)"
                    )
            line(
                f"ph_grids through qgis_process, {kind} {mode} <= "
                f"{bench_qgis_process.PH_TARGET_S:g} s",
                record,
                figure,
                wall is not None and wall <= bench_qgis_process.PH_TARGET_S,
            )
    for mode in _suite.MODES:
        record = _find(records, f"synthetic 1M qgis_process raster {mode}")
        figure, met = "", None
        if record and record.get("status") == "ok":
            figure = (
                f"{record['wall_s']:.1f} s, {record['peak_rss_mb']:,.0f} MB peak, "
                f"{record.get('partitions')} partitions"
            )
            met = (
                record["wall_s"] <= bench_scale.MILLION_TARGET_S
                and record["peak_rss_mb"] <= bench_scale.MILLION_TARGET_RSS_MB
            )
        line(
            f"1M cells through qgis_process (raster in, GeoPackage out), {mode} <= "
            f"{bench_scale.MILLION_TARGET_S:g} s and <= 2 GB",
            record,
            figure,
            met,
        )
    for series in ("raster guaranteed", "raster plain", "core guaranteed", "core plain"):
        found = _slope(records, series)
        if found is None:
            continue
        slope, span = found
        growth = _growth_per_cell(records, series)
        if growth is not None and series.startswith("raster"):
            lines.append(
                f"  [{' ok ' if growth <= MAX_BYTES_PER_CELL else 'MISS'}] peak memory grows with "
                f"one partition plus the output, {series}: +{growth:,.0f} bytes of peak RSS per "
                f"populated cell ({span}; <= {MAX_BYTES_PER_CELL} counts as not holding the "
                "country several times)"
            )
        lines.append(
            f"  [{' ok ' if slope <= LINEAR_SLOPE else 'MISS'}] about linear in cells, "
            f"{series}: time ~ cells^{slope:.2f} ({span}; <= {LINEAR_SLOPE} counts as linear)"
        )
    return lines


def time_split_lines(records: Sequence[dict[str, Any]]) -> list[str]:
    """Where the time of each qgis_process case went (probe inside qgis_process)."""
    lines = []
    for record in records:
        if record.get("status") != "ok" or record.get("algorithm_s") is None:
            continue
        phases = record.get("phases") or {}
        top = sorted(phases.items(), key=lambda item: -item[1])[:5]
        lines.append(
            f"  {record['case']}: {record['wall_s']:.2f} s = start-up "
            f"{record.get('startup_s') or 0:.2f} + imports {record.get('import_s') or 0:.2f}"
            f" + algorithm {record['algorithm_s']:.2f} (engine {record.get('core_s') or 0:.2f}, "
            f"adapter {record.get('adapter_s') or 0:.2f} = "
            f"{record.get('adapter_share') or 0:.0%} of wall) + exit "
            f"{record.get('shutdown_s') or 0:.2f}; steps: "
            + ", ".join(f"{name} {seconds:.2f}" for name, seconds in top)
        )
    return lines


def memory_lines(records: Sequence[dict[str, Any]]) -> list[str]:
    """For the largest size of each qgis_process series: which steps raised the peak RSS."""
    largest: dict[str, dict[str, Any]] = {}
    for record in records:
        if record.get("status") == "ok" and record.get("memory_mb") and record.get("series"):
            best = largest.get(record["series"])
            if best is None or record["cells"] > best["cells"]:
                largest[record["series"]] = record
    lines = []
    for record in largest.values():
        steps = list(record["memory_mb"].items())  # in the order the steps ended
        if not steps:
            continue
        start_peak = steps[0][1][0]
        rises = []
        previous = start_peak
        for name, (peak, _) in steps[1:]:
            if peak - previous > 1:
                rises.append((name, peak - previous))
            previous = max(previous, peak)
        rises.sort(key=lambda item: -item[1])
        lines.append(
            f"  {record['case']}: {record['peak_rss_mb']:,.0f} MB peak = "
            f"{start_peak:,.0f} MB when the algorithm starts (QGIS, libraries) + "
            + ", ".join(f"{name} +{rise:,.0f}" for name, rise in rises[:4])
            + f" ({(record['peak_rss_mb'] - start_peak) / record['cells'] * 2**20:,.0f} "
            "bytes per cell)"
        )
    return lines


# ---------------------------------------------------------------------------
# The plot
# ---------------------------------------------------------------------------


def write_scaling_svg(records: Sequence[dict[str, Any]], path: Path = SVG_PATH) -> Path | None:
    """Panels of wall time (and peak RSS) against populated cells, with core.charts."""
    _suite.import_plugin()
    from tuned_grid_clustering.core.charts import svg_scatter_line

    panels = []
    specs = [
        (
            "raster guaranteed",
            "wall_s",
            "qgis_process, raster in, GeoPackage out (guaranteed PSUs)",
            "wall time (s)",
        ),
        (
            "raster plain",
            "wall_s",
            "qgis_process, raster in, GeoPackage out (plain)",
            "wall time (s)",
        ),
        (
            "core guaranteed",
            "wall_s",
            "engine alone, cluster_partitions (guaranteed PSUs)",
            "wall time (s)",
        ),
        (
            "raster guaranteed",
            "peak_rss_mb",
            "qgis_process, raster in: peak memory",
            "peak RSS (MB)",
        ),
    ]
    for series, key, title, y_label in specs:
        items = sorted(
            (r for r in records if r.get("series") == series and r.get("status") == "ok"),
            key=lambda r: r["cells"],
        )
        if len(items) < 2:
            continue
        x = [r["cells"] / 1e6 for r in items]
        y = [r[key] for r in items]
        million = next((r for r in items if r["cells"] == 1_000_000), None)
        label = None
        if million is not None:
            value = f"{million[key]:.0f} s" if key == "wall_s" else f"{million[key]:,.0f} MB"
            label = f"1M cells: {value}"
            if series.startswith("raster"):
                label += " (target 60 s)" if key == "wall_s" else " (target 2 GB)"
        panels.append(
            svg_scatter_line(
                x,
                y,
                title=title,
                x_label="populated cells (millions)",
                y_label=y_label,
                highlight_x=1.0 if million is not None else None,
                highlight_label=label,
                width=480,
                height=280,
            )
        )
    if not panels:
        return None
    columns = 2
    width, height = 480, 280
    rows = (len(panels) + columns - 1) // columns
    total_w, total_h = width * min(columns, len(panels)), height * rows + 24
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{total_w}" height="{total_h}" '
        f'viewBox="0 0 {total_w} {total_h}" font-family="Helvetica, Arial, sans-serif">',
        "<title>Tuned Grid Clustering: cost against populated cells</title>",
        f'<rect width="{total_w}" height="{total_h}" fill="#ffffff"/>',
    ]
    for index, panel in enumerate(panels):
        x0, y0 = (index % columns) * width, (index // columns) * height
        # A group, not a nested <svg>: SVG Tiny renderers (Qt) ignore nested viewports.
        body = panel[panel.index(">") + 1 : panel.rindex("</svg>")]
        parts.append(f'<g transform="translate({x0},{y0})">{body}</g>')
    parts.append(
        f'<text x="8" y="{total_h - 8}" font-size="10" fill="#555555">bench/run_all.py, '
        f"2-core machine, 2 threads; synthetic grids with admin partitions of about 25k cells; "
        f"{datetime.date.today().isoformat()}</text>"
    )
    parts.append("</svg>")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(parts) + "\n")
    return path


# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------


def summary(records: Sequence[dict[str, Any]], say: Callable[[str], None]) -> None:
    """The table, the targets, the time and memory split and the scaling."""
    say(
        "Results (wall/CPU/RSS of each case's own process; 'in range': share of clusters "
        "weighing 180 to 300, 'pop in rng': share of the weight in them; 'contig': share of "
        "contiguous clusters on the engine's neighbour graph, 8-neighbour grid (+ 1 km bridges "
        "in guaranteed synthetic runs); core/adapter/outside: seconds in the engine, in the "
        "QGIS adapter, outside the algorithm (start-up, imports, exit))"
    )
    say(_suite.format_table([_suite.original_row(), *records]))
    say("")
    say("Targets (2-core machine):")
    for text in target_lines(records):
        say(text)
    split = time_split_lines(records)
    if split:
        say("")
        say("Where the qgis_process time goes (probe inside qgis_process):")
        for text in split:
            say(text)
    memory = memory_lines(records)
    if memory:
        say("")
        say("Where the peak memory of qgis_process comes from (largest size; rise of the peak):")
        for text in memory:
            say(text)
    scaling = bench_scale.scaling_summary(records)
    if scaling:
        say("")
        say("Scaling (wall seconds per million cells; slope from 100k up):")
        for text in scaling:
            say("  " + text)


def save(output: Sequence[str], environment: Sequence[str], records: list[dict[str, Any]]) -> None:
    """bench/results/latest.txt and latest.json, and docs/scaling.svg."""
    _suite.RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (_suite.RESULTS_DIR / "latest.txt").write_text("\n".join(output) + "\n")
    _suite.write_json(
        _suite.RESULTS_DIR / "latest.json",
        {"environment": list(environment), "records": records},
    )
    # Only a series reaching a million cells replaces the README's plot (not --quick).
    big = any(r.get("series") and r.get("cells", 0) >= 1_000_000 for r in records)
    svg = write_scaling_svg(records) if big else None
    print(
        f"wrote {_suite.RESULTS_DIR / 'latest.txt'}, latest.json" + (f" and {svg}" if svg else "")
    )


def reprint(path: Path, *, save_files: bool) -> int:
    """Print (and save) the report of a saved latest.json again, without running anything."""
    saved = json.loads(path.read_text())
    if isinstance(saved, list):  # the first format: records only
        saved = {"environment": [], "records": saved}
    environment, records = saved["environment"], saved["records"]
    output: list[str] = []

    def say(text: str = "") -> None:
        print(text, flush=True)
        output.append(text)

    say(f"Tuned Grid Clustering benchmark suite (bench/run_all.py), re-printed from {path.name}")
    for text in environment:
        say(text)
    say()
    for record in records:
        say("  " + bench_qgis_process.describe(record))
    say()
    summary(records, say)
    if save_files:
        save(output, environment, records)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--full", action="store_true", help="include the 5M-cell grid")
    parser.add_argument(
        "--max-cells",
        type=int,
        default=None,
        help="largest synthetic size (default 1M; 5M with --full)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="ph_grids and sizes up to 100k, one run per case"
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="runs per ph_grids case, the fastest is kept (default %(default)s)",
    )
    parser.add_argument("--n-jobs", type=int, default=2, help="threads for the synthetic series")
    parser.add_argument(
        "--kinds",
        nargs="+",
        choices=bench_scale.KINDS,
        default=list(bench_scale.KINDS),
        help="synthetic series to run",
    )
    parser.add_argument("--modes", nargs="+", choices=_suite.MODES, default=list(_suite.MODES))
    parser.add_argument("--skip-ph", action="store_true", help="no ph_grids cases")
    parser.add_argument("--skip-scale", action="store_true", help="no synthetic series")
    parser.add_argument(
        "--no-save",
        action="store_true",
        help="do not write bench/results/latest.* nor docs/scaling.svg",
    )
    parser.add_argument(
        "--reprint",
        type=Path,
        metavar="JSON",
        help="run nothing: print the report of a saved latest.json again (and save it)",
    )
    args = parser.parse_args(argv)
    if args.reprint:
        return reprint(args.reprint, save_files=not args.no_save)

    max_cells = args.max_cells or (5_000_000 if args.full else 1_000_000)
    if args.quick:
        max_cells = min(max_cells, 100_000)
    repeat = 1 if args.quick else args.repeat
    started = time.perf_counter()
    output: list[str] = []

    def say(text: str = "") -> None:
        print(text, flush=True)
        output.append(text)

    say("Tuned Grid Clustering benchmark suite (bench/run_all.py)")
    environment = environment_lines()
    for text in environment:
        say(text)
    say()

    records: list[dict[str, Any]] = []
    if not args.skip_ph:
        say(f"ph_grids, original parameters; best of {repeat} run(s) per case")
        for mode in args.modes:
            record = bench_scale.run_core_case("ph", mode, n_jobs=1, repeat=repeat)
            records.append(record)
            say("  " + bench_qgis_process.describe(record))
        for kind in bench_qgis_process.INPUTS:
            for record in bench_qgis_process.run_ph_cases(
                [kind], args.modes, n_jobs=1, repeat=repeat, verbose=False
            ):
                records.append(record)
                say("  " + bench_qgis_process.describe(record))
        say()
    if not args.skip_scale:
        sizes = [n for n in scale_data.SIZES if n <= max_cells]
        say(
            f"synthetic scale series {', '.join(f'{n:,}' for n in sizes)} cells; "
            f"{args.n_jobs} threads; one run per case"
        )
        for n_cells in sizes:
            data = scale_data.ensure_scale_data(n_cells)
            say(f"  data: {data.n_cells:,} cells, {data.n_partitions} partitions, {data.folder}")

        def done(record: dict[str, Any]) -> None:
            records.append(record)
            say("  " + bench_qgis_process.describe(record))

        bench_scale.run_series(
            sizes, args.kinds, args.modes, n_jobs=args.n_jobs, verbose=False, on_record=done
        )
        say()

    summary(records, say)
    say()
    say(f"suite finished in {time.perf_counter() - started:.0f} s; {_suite.machine_load()}")
    if not args.no_save:
        save(output, environment, records)
    return 0


if __name__ == "__main__":
    sys.exit(main())
