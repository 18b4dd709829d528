"""Write the deterministic synthetic scale series used by the benchmarks.

For each size (populated cells: 10k, 100k, 1M, 5M by default) it generates a
synthetic population grid with ``core.synthetic.synthetic_population_grid``
(fixed seed, admin partitions of about 25,000 populated cells each) and
writes it with ``tools/make_demo_data.py``:

* ``demo_grid_points.gpkg`` (layer ``grid_points``: ``grid_id``, ``population``,
  ``urban``, ``admin``), one point per populated cell;
* ``demo_population.tif``, the population raster (nodata -99999);
* ``demo_admin.gpkg`` (layer ``admin``), the admin partition as polygons;
* ``demo_grid_cells.gpkg`` (square polygons) only with ``--cells`` (for 5M
  cells it takes minutes and a gigabyte, and no case needs it);
* ``grid.npz``: the cells' ``lon, lat, population, admin, row, col`` arrays,
  so the core benchmarks load exactly the same cells without GDAL.

Nothing is downloaded. Files go to ``.build/bench/data/cells_<n>_seed<s>/``
(git-ignored); a folder whose ``meta.json`` matches is reused, so the series
is generated once.

Usage (from the repository root)::

    python3 bench/scale_data.py                      # 10k, 100k, 1M
    python3 bench/scale_data.py --sizes 5000000      # the 5M grid too
    python3 bench/scale_data.py --force --cells      # regenerate, with cell polygons
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _suite  # noqa: E402

SIZES = (10_000, 100_000, 1_000_000, 5_000_000)
DEFAULT_SIZES = (10_000, 100_000, 1_000_000)
SEED = 2024
ADMIN_CELLS = 25_000
#: Bump when the layout of a data folder changes (old folders are regenerated).
FORMAT_VERSION = 1
DATA_ROOT = _suite.WORK_DIR / "data"


@dataclass(frozen=True)
class ScaleData:
    """Paths and figures of one generated size."""

    folder: Path
    n_cells: int
    n_partitions: int
    total_population: float
    points: Path
    raster: Path
    admin: Path
    cells: Path | None
    arrays: Path

    def load_arrays(self) -> dict[str, np.ndarray]:
        """lon, lat, population, admin, row, col of the populated cells."""
        with np.load(self.arrays) as data:
            return {name: data[name] for name in data.files}


def folder_for(n_cells: int, seed: int = SEED, root: Path = DATA_ROOT) -> Path:
    return root / f"cells_{n_cells}_seed{seed}"


def _tools_writer():
    tools = str(_suite.REPO / "tools")
    if tools not in sys.path:
        sys.path.insert(0, tools)
    import make_demo_data

    return make_demo_data


def _write(grid, folder: Path, with_cells: bool) -> dict[str, Path]:
    """Points, raster and admin polygons (and cells if asked) with the tools writer."""
    writer = _tools_writer()
    if with_cells:
        return writer.write_demo_data(grid, folder)
    # write_demo_data always writes the cell polygons too; skip them (slow at
    # 5M and unused) through the writer's own helpers when they are there.
    parts = ("_write_cells", "_write_raster", "_write_admin")
    if not all(hasattr(writer, name) for name in parts):
        return writer.write_demo_data(grid, folder)
    from osgeo import gdal, ogr

    folder.mkdir(parents=True, exist_ok=True)
    paths = {
        "points": folder / writer.POINTS_NAME,
        "raster": folder / writer.RASTER_NAME,
        "admin": folder / writer.ADMIN_NAME,
    }
    gdal.UseExceptions()
    ogr.UseExceptions()
    writer._write_cells(
        paths["points"], "grid_points", grid, grid.admin_label(grid.admin), polygons=False
    )
    writer._write_raster(paths["raster"], grid)
    writer._write_admin(paths["admin"], grid)
    return paths


def ensure_scale_data(
    n_cells: int,
    *,
    seed: int = SEED,
    with_cells: bool = False,
    force: bool = False,
    root: Path = DATA_ROOT,
    verbose: bool = True,
) -> ScaleData:
    """The generated files of one size, generating them when missing or stale."""
    folder = folder_for(n_cells, seed, root)
    meta_path = folder / "meta.json"
    wanted = {
        "n_cells_target": n_cells,
        "seed": seed,
        "admin_cells": ADMIN_CELLS,
        "format": FORMAT_VERSION,
    }
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else None
    fresh = (
        meta is not None
        and all(meta.get(key) == value for key, value in wanted.items())
        and (not with_cells or meta.get("cells"))
    )
    if force or not fresh:
        meta_path.unlink(missing_ok=True)  # the marker goes last: half-written = stale
        started = time.perf_counter()
        _suite.import_plugin()
        from tuned_grid_clustering.core.synthetic import synthetic_population_grid

        grid = synthetic_population_grid(n_cells, seed=seed, admin_cells=ADMIN_CELLS)
        generated = time.perf_counter() - started
        paths = _write(grid, folder, with_cells)
        np.savez(
            folder / "grid.npz",
            lon=grid.lon,
            lat=grid.lat,
            population=grid.population,
            admin=grid.admin,
            row=grid.row,
            col=grid.col,
        )
        meta = {
            **wanted,
            "n_cells": len(grid),
            "n_partitions": int(np.unique(grid.admin).size),
            "total_population": grid.total_population,
            "grid_rows": grid.n_rows,
            "grid_cols": grid.n_cols,
            "cells": "cells" in paths,
            "files": {name: path.name for name, path in paths.items()},
            "seconds_generate": round(generated, 2),
            "seconds_total": round(time.perf_counter() - started, 2),
        }
        meta_path.write_text(json.dumps(meta, indent=2) + "\n")
        if verbose:
            print(
                f"generated {len(grid):,} cells in {meta['n_partitions']} partitions "
                f"({meta['seconds_total']:.0f} s) in {folder}",
                flush=True,
            )
    files = meta["files"]
    return ScaleData(
        folder=folder,
        n_cells=int(meta["n_cells"]),
        n_partitions=int(meta["n_partitions"]),
        total_population=float(meta["total_population"]),
        points=folder / files["points"],
        raster=folder / files["raster"],
        admin=folder / files["admin"],
        cells=folder / files["cells"] if "cells" in files else None,
        arrays=folder / "grid.npz",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes",
        type=int,
        nargs="+",
        default=list(DEFAULT_SIZES),
        help="populated cells per grid (default: %(default)s)",
    )
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--cells", action="store_true", help="also write the cell polygons")
    parser.add_argument("--force", action="store_true", help="regenerate even if present")
    args = parser.parse_args(argv)
    for n in args.sizes:
        data = ensure_scale_data(n, seed=args.seed, with_cells=args.cells, force=args.force)
        print(
            f"{data.n_cells:>10,} cells  {data.n_partitions:>4} partitions  "
            f"population {data.total_population:>12,.0f}  {data.folder}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
