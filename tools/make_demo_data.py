"""Write the synthetic demo data set (points, cells, raster, admin areas).

Usage::

    /usr/bin/python3 tools/make_demo_data.py OUTDIR [--cells N] [--seed S]

Writes, all in EPSG:4326:

* ``OUTDIR/demo_grid_points.gpkg``, layer ``grid_points``: one point per
  populated cell, fields ``grid_id`` (int), ``population`` (real),
  ``urban`` (int 0/1), ``admin`` (string);
* ``OUTDIR/demo_grid_cells.gpkg``, layer ``grid_cells``: the same cells as
  square polygons, same fields;
* ``OUTDIR/demo_population.tif``: float32 GeoTIFF of the whole grid,
  populated cells only, nodata -99999;
* ``OUTDIR/demo_admin.gpkg``, layer ``admin``: the admin partition as
  polygons, fields ``admin`` (string), ``urban`` (int 0/1: most of its
  people live in towns) and ``target_radius`` (real, metres: 1000 urban,
  2000 rural, the original project's rule).

The data are invented (:mod:`core.synthetic`) and the same for the same
seed. Needs the GDAL/OGR Python bindings (they come with QGIS).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from osgeo import gdal, ogr, osr

REPO = Path(__file__).resolve().parents[1]
PLUGINS_DIR = REPO / ".build" / "plugins"

DEFAULT_CELLS = 8000
NODATA = -99999.0
URBAN_TARGET_RADIUS_M = 1000.0
RURAL_TARGET_RADIUS_M = 2000.0
POINTS_NAME = "demo_grid_points.gpkg"
CELLS_NAME = "demo_grid_cells.gpkg"
RASTER_NAME = "demo_population.tif"
ADMIN_NAME = "demo_admin.gpkg"


def _import_synthetic():
    """Import core.synthetic through the plugin link, as QGIS would import it."""
    link = PLUGINS_DIR / "tuned_grid_clustering"
    PLUGINS_DIR.mkdir(parents=True, exist_ok=True)
    if not link.exists():
        # Another process may make it meanwhile.
        with contextlib.suppress(FileExistsError):
            link.symlink_to(REPO, target_is_directory=True)
    if str(PLUGINS_DIR) not in sys.path:
        sys.path.insert(0, str(PLUGINS_DIR))
    from tuned_grid_clustering.core import synthetic

    return synthetic


def _wgs84() -> osr.SpatialReference:
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(4326)
    srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)  # x = lon, y = lat
    return srs


def _new_vector(path: Path) -> gdal.Dataset:
    if path.exists():
        path.unlink()
    driver = ogr.GetDriverByName("GPKG")
    return driver.CreateDataSource(str(path))


def _add_fields(layer: ogr.Layer, fields: Sequence[tuple[str, int]]) -> None:
    for name, kind in fields:
        layer.CreateField(ogr.FieldDefn(name, kind))


_CELL_FIELDS = (
    ("grid_id", ogr.OFTInteger),
    ("population", ogr.OFTReal),
    ("urban", ogr.OFTInteger),
    ("admin", ogr.OFTString),
)


def _write_cells(path: Path, layer_name: str, grid, labels: np.ndarray, *, polygons: bool) -> None:
    """Points (cell centres) or square cell polygons, one feature per populated cell."""
    source = _new_vector(path)
    geometry_type = ogr.wkbPolygon if polygons else ogr.wkbPoint
    layer = source.CreateLayer(layer_name, _wgs84(), geometry_type)
    _add_fields(layer, _CELL_FIELDS)
    definition = layer.GetLayerDefn()
    half = grid.cell_size_deg / 2
    layer.StartTransaction()
    for index in range(len(grid)):
        feature = ogr.Feature(definition)
        feature.SetField("grid_id", index + 1)
        feature.SetField("population", float(grid.population[index]))
        feature.SetField("urban", int(grid.urban[index]))
        feature.SetField("admin", str(labels[index]))
        x, y = float(grid.lon[index]), float(grid.lat[index])
        if polygons:
            ring = ogr.Geometry(ogr.wkbLinearRing)
            for corner_x, corner_y in (
                (x - half, y - half),
                (x + half, y - half),
                (x + half, y + half),
                (x - half, y + half),
                (x - half, y - half),
            ):
                ring.AddPoint_2D(corner_x, corner_y)
            geometry = ogr.Geometry(ogr.wkbPolygon)
            geometry.AddGeometry(ring)
        else:
            geometry = ogr.Geometry(ogr.wkbPoint)
            geometry.AddPoint_2D(x, y)
        feature.SetGeometry(geometry)
        layer.CreateFeature(feature)
    layer.CommitTransaction()
    source = None  # closes and flushes the file


def _write_raster(path: Path, grid) -> None:
    values = np.full((grid.n_rows, grid.n_cols), NODATA, dtype=np.float32)
    values[grid.row, grid.col] = grid.population
    if path.exists():
        path.unlink()
    driver = gdal.GetDriverByName("GTiff")
    raster = driver.Create(
        str(path),
        grid.n_cols,
        grid.n_rows,
        1,
        gdal.GDT_Float32,
        options=["COMPRESS=DEFLATE", "PREDICTOR=3", "TILED=YES"],
    )
    raster.SetGeoTransform(grid.geotransform)
    raster.SetProjection(_wgs84().ExportToWkt())
    band = raster.GetRasterBand(1)
    band.SetNoDataValue(NODATA)
    band.WriteArray(values)
    band.FlushCache()
    raster = None


def _write_admin(path: Path, grid) -> int:
    """Polygonise the admin partition of the whole grid; returns the number of areas."""
    rows, cols = np.meshgrid(np.arange(grid.n_rows), np.arange(grid.n_cols), indexing="ij")
    codes = grid.admin_of(rows, cols).astype(np.int32)

    memory = gdal.GetDriverByName("MEM").Create("", grid.n_cols, grid.n_rows, 1, gdal.GDT_Int32)
    memory.SetGeoTransform(grid.geotransform)
    memory.SetProjection(_wgs84().ExportToWkt())
    memory.GetRasterBand(1).WriteArray(codes)
    pieces_source = ogr.GetDriverByName("Memory").CreateDataSource("pieces")
    pieces = pieces_source.CreateLayer("pieces", _wgs84(), ogr.wkbPolygon)
    pieces.CreateField(ogr.FieldDefn("code", ogr.OFTInteger))
    gdal.Polygonize(memory.GetRasterBand(1), None, pieces, 0, [], callback=None)

    # Dissolve the pieces of each code (a Voronoi cell on a raster can touch
    # itself only diagonally, which Polygonize splits).
    parts: dict[int, list[ogr.Geometry]] = {}
    for feature in pieces:
        parts.setdefault(feature.GetField("code"), []).append(feature.GetGeometryRef().Clone())

    # An area is urban when most of its people live in urban cells.
    people = np.bincount(grid.admin, weights=grid.population, minlength=codes.max() + 1)
    urban_people = np.bincount(
        grid.admin, weights=grid.population * grid.urban, minlength=codes.max() + 1
    )

    source = _new_vector(path)
    layer = source.CreateLayer("admin", _wgs84(), ogr.wkbMultiPolygon)
    _add_fields(
        layer,
        (("admin", ogr.OFTString), ("urban", ogr.OFTInteger), ("target_radius", ogr.OFTReal)),
    )
    definition = layer.GetLayerDefn()
    layer.StartTransaction()
    for code in sorted(parts):
        union = ogr.Geometry(ogr.wkbMultiPolygon)
        for piece in parts[code]:
            union.AddGeometry(piece)
        union = union.UnionCascaded()
        union = ogr.ForceToMultiPolygon(union)
        urban = bool(people[code] > 0 and urban_people[code] >= 0.5 * people[code])
        feature = ogr.Feature(definition)
        feature.SetField("admin", str(grid.admin_label(code)))
        feature.SetField("urban", int(urban))
        feature.SetField("target_radius", URBAN_TARGET_RADIUS_M if urban else RURAL_TARGET_RADIUS_M)
        feature.SetGeometry(union)
        layer.CreateFeature(feature)
    layer.CommitTransaction()
    source = None
    return len(parts)


def write_demo_data(grid, outdir: str | os.PathLike[str]) -> dict[str, Path]:
    """Write the four demo files of a :class:`SyntheticGrid` into ``outdir``.

    Parameters
    ----------
    grid : SyntheticGrid
        From :func:`core.synthetic.synthetic_population_grid`.
    outdir : str or path-like
        Destination folder, created if missing; existing demo files in it
        are replaced.

    Returns
    -------
    dict of str to Path
        ``points``, ``cells``, ``raster`` and ``admin`` file paths.
    """
    folder = Path(outdir)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {
        "points": folder / POINTS_NAME,
        "cells": folder / CELLS_NAME,
        "raster": folder / RASTER_NAME,
        "admin": folder / ADMIN_NAME,
    }
    # Errors as Python exceptions here, without changing the caller's setting.
    gdal_raised, ogr_raised = gdal.GetUseExceptions(), ogr.GetUseExceptions()
    gdal.UseExceptions()
    ogr.UseExceptions()
    try:
        labels = grid.admin_label(grid.admin)
        _write_cells(paths["points"], "grid_points", grid, labels, polygons=False)
        _write_cells(paths["cells"], "grid_cells", grid, labels, polygons=True)
        _write_raster(paths["raster"], grid)
        _write_admin(paths["admin"], grid)
    finally:
        # GDAL keeps a stack of error handlers: undo in reverse order.
        if not ogr_raised:
            ogr.DontUseExceptions()
        if not gdal_raised:
            gdal.DontUseExceptions()
    return paths


def make_demo_data(
    outdir: str | os.PathLike[str], *, cells: int = DEFAULT_CELLS, seed: int = 0
) -> dict[str, Path]:
    """Generate the synthetic grid and write the four demo files into ``outdir``.

    Parameters
    ----------
    outdir : str or path-like
        Destination folder (see :func:`write_demo_data`).
    cells : int
        Populated cells wanted (see ``core.synthetic.synthetic_population_grid``).
    seed : int
        Random seed.

    Returns
    -------
    dict of str to Path
        ``points``, ``cells``, ``raster`` and ``admin`` file paths.
    """
    synthetic = _import_synthetic()
    return write_demo_data(synthetic.synthetic_population_grid(cells, seed=seed), outdir)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Write the synthetic demo data (grid points, grid cells, "
        "population raster, admin areas) for Tuned Grid Clustering."
    )
    parser.add_argument("outdir", help="folder to write the files into")
    parser.add_argument(
        "--cells", type=int, default=DEFAULT_CELLS, help="populated cells (default %(default)s)"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default %(default)s)")
    args = parser.parse_args(argv)
    if args.cells < 1:
        parser.error("--cells must be at least 1")
    synthetic = _import_synthetic()
    grid = synthetic.synthetic_population_grid(args.cells, seed=args.seed)
    paths = write_demo_data(grid, args.outdir)
    print(
        f"{len(grid):,} populated cells, population {grid.total_population:,.0f} "
        f"({grid.total_population / 240:.1f} clusters of 240), "
        f"{np.unique(grid.admin).size} admin areas with people"
    )
    for path in paths.values():
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
