"""One polygon per cluster: traced grid-cell outlines, dissolved polygons or convex hulls.

Grid units are outlined exactly by burning their cluster codes into small
in-memory rasters and tracing them with GDAL's Polygonize (the union of the
cells, holes included), a range of codes and a tile at a time so memory stays
small; other polygons are dissolved with GEOS; scattered points get the convex
hull of their members.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np
from qgis.core import QgsGeometry, QgsPointXY, QgsRectangle, QgsWkbTypes

from .grids import RegularGrid
from .metric_crs import metres_in_layer_units

if TYPE_CHECKING:
    from .common import Units, WrittenUnits


# Cluster outlines are traced on rasters of cluster codes, one per tile of
# _TRACE_TILE x _TRACE_TILE grid cells holding the clusters' north-west
# corners: small tiles keep GDAL's polygons of one tile in memory at a time.
# A cluster whose bounding box spans more than _MAX_TRACE_CELLS cells (16 MB
# of int32) is unioned from its cells instead.
_TRACE_TILE = 256


_MAX_TRACE_CELLS = 4_000_000


# Cells traced in one go (a range of cluster codes).
_OUTLINE_BATCH_CELLS = 250_000


def geometry_from_wkb(wkb: bytes | None) -> QgsGeometry:
    """A QgsGeometry from WKB; an empty geometry for None."""
    geometry = QgsGeometry()
    if wkb is not None:
        geometry.fromWkb(wkb)
    return geometry


def grid_cell_outlines(grid: RegularGrid, codes: np.ndarray, n_codes: int) -> list[bytes | None]:
    """Union of the grid cells of each cluster code, as MultiPolygon WKB (None: no cell).

    The cells' codes are burnt into small in-memory rasters laid on the grid
    (tiles of the grid's extent, clusters grouped by where they start), and
    GDAL's Polygonize traces the outline of each code: the exact union of
    the cells, holes included, with cells touching only at a corner as
    separate parts of one multipolygon, as GEOS's union of the cells gives,
    at a fraction of its cost. Cells with a negative code (no cluster) are
    skipped. WKB is a third of the memory of QgsGeometry objects; features
    are made from it one at a time when written.
    """
    codes = np.asarray(codes)
    if codes.size > _OUTLINE_BATCH_CELLS:
        return _outlines_in_batches(grid, codes, n_codes)
    return _outlines(grid, codes, n_codes)


def _outlines(grid: RegularGrid, codes: np.ndarray, n_codes: int) -> list[bytes | None]:
    keep = codes >= 0
    codes = codes[keep]
    polygons: list[bytes | None] = [None] * n_codes
    if codes.size == 0:
        return polygons
    lattice = grid.lattice
    # North-up raster indices: j grows eastwards, i southwards.
    j = grid.column[keep] * (1 if lattice.spacing_x > 0 else -1)
    i = grid.row[keep] * (-1 if lattice.spacing_y > 0 else 1)
    order = np.argsort(codes, kind="stable")
    code_sorted = codes[order]
    starts = np.flatnonzero(np.r_[True, code_sorted[1:] != code_sorted[:-1]])
    present = code_sorted[starts]
    i_low = np.minimum.reduceat(i[order], starts)
    i_high = np.maximum.reduceat(i[order], starts)
    j_low = np.minimum.reduceat(j[order], starts)
    j_high = np.maximum.reduceat(j[order], starts)
    spread = (i_high - i_low + 1) * (j_high - j_low + 1)
    # Clusters spread too widely for a raster: union of their cells' row runs.
    wide = spread > _MAX_TRACE_CELLS
    for code in present[wide].tolist():
        members = codes == code
        part = RegularGrid(lattice, grid.column[keep][members], grid.row[keep][members])
        union = _grid_cell_union(part, np.zeros(int(members.sum()), np.int64), 1)[0]
        union.convertToMultiType()
        polygons[code] = bytes(union.asWkb())
    # Group the other clusters by the tile holding their north-west corner.
    traced = ~wide
    tile_of_code = np.full(n_codes, -1, dtype=np.int64)
    tile_i = i_low[traced] // _TRACE_TILE
    tile_j = j_low[traced] // _TRACE_TILE
    _, tile_ids = np.unique(np.column_stack([tile_i, tile_j]), axis=0, return_inverse=True)
    tile_of_code[present[traced]] = tile_ids.reshape(-1)
    cell_tile = tile_of_code[codes]
    by_tile = np.argsort(cell_tile, kind="stable")
    tile_sorted = cell_tile[by_tile]
    bounds = np.flatnonzero(np.r_[True, tile_sorted[1:] != tile_sorted[:-1], True])
    origin_x = lattice.origin_x
    origin_y = lattice.origin_y
    size_x, size_y = abs(lattice.spacing_x), abs(lattice.spacing_y)
    for first, last in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
        if tile_sorted[first] < 0:
            continue  # cells of wide clusters, done above
        cells = by_tile[first:last]
        tile_i0, tile_j0 = int(i[cells].min()), int(j[cells].min())
        geotransform = (
            origin_x + (tile_j0 - 0.5) * size_x,
            size_x,
            0.0,
            origin_y - (tile_i0 - 0.5) * size_y,
            0.0,
            -size_y,
        )
        parts = _trace_codes(i[cells] - tile_i0, j[cells] - tile_j0, codes[cells], geotransform)
        for code, wkbs in parts.items():  # a cluster lies in one tile: it is complete
            polygons[code] = _multipolygon_wkb(wkbs)
    return polygons


def _outlines_in_batches(grid: RegularGrid, codes: np.ndarray, n_codes: int) -> list[bytes | None]:
    """:func:`grid_cell_outlines` a range of codes at a time, about a million cells each.

    The working arrays of tracing then grow with a batch, not with the
    country: only a one-byte mask per cell is made for each batch.
    """
    sizes = np.bincount(codes[codes >= 0], minlength=n_codes)
    ends = np.cumsum(sizes)
    polygons: list[bytes | None] = [None] * n_codes
    low = 0
    while low < n_codes:
        # Codes up to about one batch of cells further (at least one code).
        reached = ends[low - 1] if low else 0
        high = int(np.searchsorted(ends, reached + _OUTLINE_BATCH_CELLS, side="right"))
        high = min(max(high, low + 1), n_codes)
        inside = (codes >= low) & (codes < high)
        batch = RegularGrid(grid.lattice, grid.column[inside], grid.row[inside])
        polygons[low:high] = _outlines(batch, codes[inside] - low, high - low)
        del inside, batch
        low = high
    return polygons


def _trace_codes(
    rows: np.ndarray,
    columns: np.ndarray,
    codes: np.ndarray,
    geotransform: tuple[float, ...],
) -> dict[int, list[bytes]]:
    """Polygonize the cells (``rows``, ``columns``) with their ``codes``: WKB polygons by code."""
    from osgeo import gdal, ogr

    height = int(rows.max()) + 1
    width = int(columns.max()) + 1
    burnt = np.zeros((height, width), dtype=np.int32)
    burnt[rows, columns] = codes + 1  # 0: no cell (masked out)
    previous = gdal.GetUseExceptions()
    gdal.UseExceptions()
    try:
        raster = gdal.GetDriverByName("MEM").Create("", width, height, 1, gdal.GDT_Int32)
        raster.SetGeoTransform(geotransform)
        band = raster.GetRasterBand(1)
        band.WriteArray(burnt)
        del burnt
        vector = ogr.GetDriverByName("Memory").CreateDataSource("outlines")
        layer = vector.CreateLayer("outlines", geom_type=ogr.wkbPolygon)
        layer.CreateField(ogr.FieldDefn("code", ogr.OFTInteger))
        # The band is its own mask: cells of value 0 make no polygon.
        gdal.Polygonize(band, band, layer, 0, [])
        del raster, band
        parts: dict[int, list[bytes]] = {}
        for code, wkb in _codes_and_wkb(layer):
            parts.setdefault(code - 1, []).append(wkb)
        return parts
    finally:
        if not previous:
            gdal.DontUseExceptions()


def _codes_and_wkb(layer: Any) -> Iterator[tuple[int, bytes]]:
    """(code, ISO WKB) of every feature of an OGR layer: column by column when GDAL can."""
    from osgeo import ogr

    try:  # GDAL >= 3.6: whole columns at once, far faster than feature by feature
        batches = layer.GetArrowStreamAsNumPy(options=["USE_MASKED_ARRAYS=NO"])
    except (AttributeError, RuntimeError):
        batches = None
    if batches is not None:
        geometry_column = layer.GetGeometryColumn() or "wkb_geometry"
        for batch in batches:
            for code, wkb in zip(batch["code"].tolist(), batch[geometry_column]):
                yield int(code), bytes(wkb)
        return
    layer.ResetReading()
    for feature in layer:
        yield feature.GetField(0), bytes(feature.GetGeometryRef().ExportToIsoWkb(ogr.wkbNDR))


def _multipolygon_wkb(wkbs: list[bytes]) -> bytes:
    """A MultiPolygon WKB of the given (disjoint) polygon WKBs."""
    header = np.array([(1, QgsWkbTypes.MultiPolygon, len(wkbs))], dtype=_MULTI_HEADER)
    return header.tobytes() + b"".join(wkbs)


_MULTI_HEADER = np.dtype([("order", "u1"), ("type", "<u4"), ("parts", "<u4")])


def _grid_cell_union(grid: RegularGrid, codes: np.ndarray, n_codes: int) -> list[QgsGeometry]:
    """Union of the grid cells of each cluster code, with GEOS (for widely spread clusters).

    Horizontal runs of neighbouring cells of one cluster become one
    rectangle first, so GEOS unions a few rectangles per row instead of
    every cell. Cells with a negative code (no cluster) are skipped.
    """
    if np.any(codes < 0):
        keep = codes >= 0
        grid = replace(grid, column=grid.column[keep], row=grid.row[keep])
        codes = codes[keep]
    if codes.size == 0:
        return [QgsGeometry() for _ in range(n_codes)]
    order = np.lexsort((grid.column, grid.row, codes))
    code_sorted = codes[order]
    row_sorted = grid.row[order]
    column_sorted = grid.column[order]
    breaks = np.ones(order.size, dtype=bool)
    breaks[1:] = (
        (code_sorted[1:] != code_sorted[:-1])
        | (row_sorted[1:] != row_sorted[:-1])
        | (column_sorted[1:] != column_sorted[:-1] + 1)
    )
    run_start = np.flatnonzero(breaks)
    run_end = np.append(run_start[1:], order.size) - 1
    lattice = grid.lattice
    left = lattice.edge_x(column_sorted[run_start])
    right = lattice.edge_x(column_sorted[run_end] + 1)
    bottom = lattice.edge_y(row_sorted[run_start])
    top = lattice.edge_y(row_sorted[run_start] + 1)
    if lattice.spacing_y < 0:
        bottom, top = top, bottom
    rectangles: list[list[QgsGeometry]] = [[] for _ in range(n_codes)]
    for code, x0, y0, x1, y1 in zip(
        code_sorted[run_start].tolist(),
        left.tolist(),
        bottom.tolist(),
        right.tolist(),
        top.tolist(),
    ):
        rectangles[code].append(QgsGeometry.fromRect(QgsRectangle(x0, y0, x1, y1)))
    return [_union(parts) for parts in rectangles]


def hull_polygons(
    xy: np.ndarray, codes: np.ndarray, n_codes: int, degenerate_buffer: float
) -> list[QgsGeometry]:
    """Convex hull of each cluster's points; degenerate hulls buffered by ``degenerate_buffer``."""
    points: list[list[QgsPointXY]] = [[] for _ in range(n_codes)]
    for code, (x, y) in zip(codes.tolist(), xy.tolist()):
        if code >= 0:
            points[code].append(QgsPointXY(x, y))
    polygons = []
    for members in points:
        if not members:
            polygons.append(QgsGeometry())
            continue
        hull = QgsGeometry.fromMultiPointXY(members).convexHull()
        if hull.type() != QgsWkbTypes.PolygonGeometry or not hull.area() > 0:
            hull = hull.buffer(degenerate_buffer, 8)
        polygons.append(hull)
    return polygons


def dissolve_polygons(
    geometries_by_code: dict[int, list[QgsGeometry]], n_codes: int
) -> list[QgsGeometry]:
    """Dissolve (union) the member polygons of each cluster code."""
    return [_union(geometries_by_code.get(code, [])) for code in range(n_codes)]


def _union(parts: list[QgsGeometry]) -> QgsGeometry:
    if not parts:
        return QgsGeometry()
    union = QgsGeometry.unaryUnion(parts)
    if union.isNull() or union.isEmpty():
        # GEOS fails on some invalid input: repair the members and retry.
        repaired = [part.makeValid() for part in parts]
        union = QgsGeometry.unaryUnion(repaired)
    if union.isNull() or union.isEmpty():
        union = QgsGeometry.collectGeometry(parts).convexHull()
    if union.type() != QgsWkbTypes.PolygonGeometry:
        # makeValid can return a collection with lines; keep the polygons.
        polygons = [
            g for g in union.asGeometryCollection() if g.type() == QgsWkbTypes.PolygonGeometry
        ]
        union = QgsGeometry.collectGeometry(polygons) if polygons else union.convexHull()
    return union


# A hull of collinear or coincident points is buffered by this many metres
# (converted to layer units) so that every cluster gets a polygon.
DEGENERATE_HULL_BUFFER_M = 1.0


def cluster_polygons(
    units: Units,
    codes: np.ndarray,
    n_codes: int,
    written: WrittenUnits | None,
    grid: RegularGrid | None,
) -> tuple[list[QgsGeometry] | list[bytes | None], str]:
    """One polygon per cluster code, in the layer CRS, and how they were built.

    - Units on a regular grid (``grid``, from :func:`unit_grid`: grid cells,
      or points whose grid spacing is inferred in the layer CRS): the outline
      of the members' grid cells (:func:`grid_cell_outlines`, WKB); for cells
      this is their dissolve, far faster.
    - Other polygons: the dissolve of the member polygons (collected by
      :func:`write_unit_features`).
    - Other points: the convex hull of the members, buffered by
      ``DEGENERATE_HULL_BUFFER_M`` when it is a point or a line.

    Units with a negative code (no cluster) are left out.

    Returns
    -------
    polygons, method
        ``method`` is "dissolve", "grid cells" or "convex hull".
    """
    if grid is not None:
        method = "dissolve (grid cells)" if units.is_polygon else "grid cells"
        return grid_cell_outlines(grid, codes, n_codes), method
    if units.is_polygon:
        if written is None:
            raise ValueError("polygon input needs the geometries collected while writing")
        return dissolve_polygons(written.geometries_by_code, n_codes), "dissolve"
    buffer = DEGENERATE_HULL_BUFFER_M * metres_in_layer_units(units.crs)
    return hull_polygons(units.xy, codes, n_codes, buffer), "convex hull"
