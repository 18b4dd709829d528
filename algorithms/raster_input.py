"""Reading a population raster as its populated cells, a block of rows at a time.

The clustering algorithms only need the populated cells of a band: their
(row, column) and value. A national 3-arc-second raster has hundreds of
millions of cells, most of them empty, so the band is never read whole:
:func:`read_populated_cells` reads blocks of rows and keeps, per block, the
cells with a value (by default: not nodata and greater than 0).

Two readers give the same cells:

* GDAL (``osgeo.gdal``, shipped with QGIS), when the layer comes from the
  ``gdal`` provider: the file is opened again by its source inside the
  algorithm, so the background thread never shares a dataset with the map
  canvas; nodata values, NaN and GDAL mask bands (alpha, internal masks) are
  honoured, and scale/offset applied.
* The layer's QGIS data provider (``provider.block``) otherwise (WCS, other
  providers): its nodata value and nodata bitmap are honoured.

:func:`rasterise_partitions` tells which partition polygon holds each cell
centre: the polygons are burnt onto the raster's grid with
``gdal.RasterizeLayer`` into a small in-memory raster per block of rows (a
cell belongs to a polygon when its centre is inside, GDAL's rule), so a
million cells take a second or two whatever the number of polygons.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, Sequence

import numpy as np
from qgis.core import (
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsRasterLayer,
    QgsRectangle,
)

if TYPE_CHECKING:  # core.adjacency needs scipy: imported where used
    from ..core.adjacency import Lattice

# Cells read per block (a block is a number of whole rows): bounds memory.
DEFAULT_BLOCK_CELLS = 1_000_000

# QGIS raster data types (Qgis.DataType) -> numpy dtypes of QgsRasterBlock.data().
_QGIS_DTYPES = {
    1: np.uint8,  # Byte
    2: np.uint16,  # UInt16
    3: np.int16,  # Int16
    4: np.uint32,  # UInt32
    5: np.int32,  # Int32
    6: np.float32,  # Float32
    7: np.float64,  # Float64
}


@dataclass(frozen=True)
class RasterGrid:
    """The cell grid of a north-up (or south-up) raster: a GDAL geotransform without rotation.

    Attributes
    ----------
    origin_x, origin_y : float
        Corner of the cell at row 0, column 0 (top-left for north-up rasters).
    pixel_width, pixel_height : float
        Size of a cell along x and y, signed (``pixel_height < 0`` for north-up).
    width, height : int
        Columns and rows.
    """

    origin_x: float
    origin_y: float
    pixel_width: float
    pixel_height: float
    width: int
    height: int

    @classmethod
    def from_geotransform(
        cls, geotransform: Sequence[float], width: int, height: int
    ) -> RasterGrid:
        """From a GDAL geotransform; QgsProcessingException if it is rotated."""
        x0, dx, rx, y0, ry, dy = (float(v) for v in geotransform)
        if rx != 0.0 or ry != 0.0:
            raise QgsProcessingException(
                "The raster is rotated (its geotransform has rotation terms), so its cells are "
                "not an axis-aligned grid. Warp it to a north-up raster first (Raster > "
                "Projections > Warp (Reproject))."
            )
        if not (dx != 0.0 and dy != 0.0 and math.isfinite(dx) and math.isfinite(dy)):
            raise QgsProcessingException(
                f"The raster's cell size ({dx:g} x {dy:g}) is not usable. Check its georeferencing."
            )
        return cls(x0, y0, dx, dy, int(width), int(height))

    @classmethod
    def from_layer(cls, layer: QgsRasterLayer) -> RasterGrid:
        """From a QGIS raster layer (north-up, as QGIS presents every raster)."""
        extent = layer.extent()
        width, height = layer.width(), layer.height()
        if width <= 0 or height <= 0 or extent.isEmpty():
            raise QgsProcessingException(
                "The raster layer has no cells (empty extent). Check that it opens in QGIS."
            )
        return cls(
            extent.xMinimum(),
            extent.yMaximum(),
            extent.width() / width,
            -extent.height() / height,
            width,
            height,
        )

    def centres(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Cell centres (x, y) in the raster CRS, shape (n, 2)."""
        x = self.origin_x + (np.asarray(cols, dtype=float) + 0.5) * self.pixel_width
        y = self.origin_y + (np.asarray(rows, dtype=float) + 0.5) * self.pixel_height
        return np.column_stack([x, y])

    def cell_box(self, row: int, col: int) -> tuple[float, float, float, float]:
        """xmin, ymin, xmax, ymax of one cell."""
        x_a = self.origin_x + col * self.pixel_width
        x_b = self.origin_x + (col + 1) * self.pixel_width
        y_a = self.origin_y + row * self.pixel_height
        y_b = self.origin_y + (row + 1) * self.pixel_height
        return min(x_a, x_b), min(y_a, y_b), max(x_a, x_b), max(y_a, y_b)

    def rows_extent(self, first_row: int, n_rows: int) -> QgsRectangle:
        """Extent of ``n_rows`` whole rows starting at ``first_row``."""
        y_a = self.origin_y + first_row * self.pixel_height
        y_b = self.origin_y + (first_row + n_rows) * self.pixel_height
        x_a = self.origin_x
        x_b = self.origin_x + self.width * self.pixel_width
        return QgsRectangle(min(x_a, x_b), min(y_a, y_b), max(x_a, x_b), max(y_a, y_b))

    @property
    def geotransform(self) -> tuple[float, float, float, float, float, float]:
        return (self.origin_x, self.pixel_width, 0.0, self.origin_y, 0.0, self.pixel_height)

    def lattice(self) -> Lattice:
        """The grid as core's ``Lattice``: nodes at cell centres, columns and rows as here."""
        from ..core.adjacency import Lattice

        return Lattice(
            origin_x=self.origin_x + 0.5 * self.pixel_width,
            origin_y=self.origin_y + 0.5 * self.pixel_height,
            spacing_x=self.pixel_width,
            spacing_y=self.pixel_height,
            n_columns=self.width,
            n_rows=self.height,
        )


@dataclass
class PopulatedCells:
    """The cells of a band kept for clustering, in reading (row-major) order.

    Attributes
    ----------
    grid : RasterGrid
    rows, cols : ndarray of int32, shape (n,)
    values : ndarray of float64, shape (n,)
        The cell values (population), scale and offset applied.
    n_nodata : int
        Cells left out as nodata (nodata value, NaN, masked).
    n_zero : int
        Cells left out because their value is 0 (0 when zeros are kept).
    n_negative : int
        Cells left out because their value is negative.
    negative_sum : float
        Sum of the negative values left out.
    reader : str
        "GDAL" or "QGIS provider".
    """

    grid: RasterGrid
    rows: np.ndarray
    cols: np.ndarray
    values: np.ndarray
    n_nodata: int = 0
    n_zero: int = 0
    n_negative: int = 0
    negative_sum: float = 0.0
    reader: str = ""

    @property
    def n(self) -> int:
        return int(self.rows.shape[0])


class _Collector:
    """Keeps the populated cells of each block and counts what is left out."""

    def __init__(self, include_zero: bool) -> None:
        self.include_zero = include_zero
        self.rows: list[np.ndarray] = []
        self.cols: list[np.ndarray] = []
        self.values: list[np.ndarray] = []
        self.n_nodata = 0
        self.n_zero = 0
        self.n_negative = 0
        self.negative_sum = 0.0

    def add(self, first_row: int, values: np.ndarray, valid: np.ndarray) -> None:
        """``values`` (float64, n_rows x width) with ``valid`` False for nodata cells."""
        self.n_nodata += int(valid.size - np.count_nonzero(valid))
        negative = valid & (values < 0)
        if negative.any():
            self.n_negative += int(np.count_nonzero(negative))
            self.negative_sum += float(values[negative].sum())
        keep = valid & (values >= 0 if self.include_zero else values > 0)
        if not self.include_zero:
            self.n_zero += int(np.count_nonzero(valid & (values == 0)))
        rows, cols = np.nonzero(keep)
        if rows.size:
            # int32: a country's cells are kept all at once (a raster is far
            # narrower than 2**31 cells)
            self.rows.append((rows + first_row).astype(np.int32))
            self.cols.append(cols.astype(np.int32))
            self.values.append(values[rows, cols])

    def cells(self, grid: RasterGrid, reader: str) -> PopulatedCells:
        def joined(parts: list[np.ndarray], dtype) -> np.ndarray:
            whole = np.concatenate(parts) if parts else np.empty(0, dtype=dtype)
            parts.clear()  # one column is held twice at a time, not all three
            return whole

        return PopulatedCells(
            grid=grid,
            rows=joined(self.rows, np.int32),
            cols=joined(self.cols, np.int32),
            values=joined(self.values, np.float64),
            n_nodata=self.n_nodata,
            n_zero=self.n_zero,
            n_negative=self.n_negative,
            negative_sum=self.negative_sum,
            reader=reader,
        )


def check_band(layer: QgsRasterLayer, band: int) -> None:
    """QgsProcessingException when ``band`` is not a band of ``layer``."""
    count = layer.bandCount()
    if not 1 <= band <= count:
        raise QgsProcessingException(
            f"Band {band} does not exist: the raster '{layer.name()}' has "
            f"{count} band{'s' if count != 1 else ''} (1 to {count}). Choose one of them as BAND."
        )


def read_populated_cells(
    layer: QgsRasterLayer,
    band: int,
    *,
    include_zero: bool = False,
    feedback: QgsProcessingFeedback | None = None,
    progress_span: tuple[float, float] = (0.0, 10.0),
    block_cells: int = DEFAULT_BLOCK_CELLS,
    use_gdal: bool | None = None,
) -> PopulatedCells:
    """The populated cells of one band, read a block of rows at a time.

    Parameters
    ----------
    layer : QgsRasterLayer
    band : int
        1-based band number.
    include_zero : bool
        Keep cells whose value is 0 (nodata and negative cells are always left out).
    feedback : QgsProcessingFeedback, optional
        Progress over ``progress_span`` and cancellation.
    block_cells : int
        About how many cells one block holds (whole rows, at least one).
    use_gdal : bool, optional
        Force the GDAL reader (True) or the QGIS provider (False); default:
        GDAL for layers of the ``gdal`` provider.

    Returns
    -------
    PopulatedCells
        Row-major order (row by row, columns left to right).

    Raises
    ------
    QgsProcessingException
        A band out of range, an unreadable or rotated raster, cancellation.
    """
    if layer is None or not layer.isValid():
        raise QgsProcessingException("The input raster could not be opened. Check INPUT.")
    check_band(layer, band)
    if use_gdal is None:
        use_gdal = layer.providerType() == "gdal"
    collector = _Collector(include_zero)
    if use_gdal:
        dataset = _open_gdal(layer)
        if dataset is not None:
            grid = RasterGrid.from_geotransform(
                dataset.GetGeoTransform(), dataset.RasterXSize, dataset.RasterYSize
            )
            blocks = _row_blocks(grid, block_cells, feedback, progress_span)
            _read_gdal(dataset, band, grid, collector, blocks)
            del dataset  # closed: GDAL drops its cached blocks of the raster
            return collector.cells(grid, "GDAL")
    grid = RasterGrid.from_layer(layer)
    blocks = _row_blocks(grid, block_cells, feedback, progress_span)
    _read_provider(layer, band, grid, collector, blocks)
    return collector.cells(grid, "QGIS provider")


def _open_gdal(layer: QgsRasterLayer):
    """A new GDAL dataset on the layer's source, or None if GDAL cannot open it."""
    from osgeo import gdal

    source = layer.source()
    previous = gdal.GetUseExceptions()
    gdal.UseExceptions()
    try:
        return gdal.Open(source, gdal.GA_ReadOnly)
    except RuntimeError:
        return None
    finally:
        if not previous:
            gdal.DontUseExceptions()


def _row_blocks(
    grid: RasterGrid,
    block_cells: int,
    feedback: QgsProcessingFeedback | None,
    span: tuple[float, float],
) -> Iterator[tuple[int, int]]:
    """``(first_row, n_rows)`` of blocks of whole rows of about ``block_cells`` cells.

    Progress over ``span`` and a cancellation check before each block and
    after the last.
    """
    rows_per_block = max(1, int(block_cells) // max(grid.width, 1))
    starts = range(0, grid.height, rows_per_block)
    for done, start in enumerate(starts):
        _tick(feedback, span, done, len(starts))
        yield start, min(rows_per_block, grid.height - start)
    _tick(feedback, span, len(starts), len(starts))


def _tick(
    feedback: QgsProcessingFeedback | None, span: tuple[float, float], done: int, total: int
) -> None:
    if feedback is None:
        return
    if feedback.isCanceled():
        raise QgsProcessingException("Cancelled.")
    start, end = span
    feedback.setProgress(start + (end - start) * done / max(total, 1))


def _valid_values(data: np.ndarray, nodata: float | None) -> np.ndarray:
    """True where ``data`` (native dtype) is not the nodata value and not NaN."""
    valid = np.ones(data.shape, dtype=bool)
    if data.dtype.kind == "f":
        valid &= ~np.isnan(data)
    if nodata is not None and not math.isnan(nodata):
        if data.dtype.kind == "f":
            valid &= data != data.dtype.type(nodata)
        elif (
            float(nodata).is_integer()
            and np.iinfo(data.dtype).min <= nodata <= np.iinfo(data.dtype).max
        ):
            valid &= data != int(nodata)
    return valid


def _read_gdal(
    dataset,
    band_number: int,
    grid: RasterGrid,
    collector: _Collector,
    blocks: Iterable[tuple[int, int]],
) -> None:
    from osgeo import gdal

    band = dataset.GetRasterBand(band_number)
    nodata = band.GetNoDataValue()
    scale = band.GetScale()
    offset = band.GetOffset()
    scale = 1.0 if scale is None else float(scale)
    offset = 0.0 if offset is None else float(offset)
    flags = band.GetMaskFlags()
    # A real mask (alpha band, per-dataset or internal mask), not just nodata.
    use_mask = not (flags & gdal.GMF_ALL_VALID) and not (flags & gdal.GMF_NODATA)
    mask_band = band.GetMaskBand() if use_mask else None
    for first_row, n_rows in blocks:
        data = band.ReadAsArray(0, first_row, grid.width, n_rows)
        if data is None:
            raise QgsProcessingException(
                f"GDAL could not read rows {first_row}-{first_row + n_rows - 1} of the raster: "
                f"{gdal.GetLastErrorMsg() or 'unknown error'}. Check the file."
            )
        valid = _valid_values(data, nodata)
        if mask_band is not None:
            valid &= mask_band.ReadAsArray(0, first_row, grid.width, n_rows) > 0
        values = data.astype(np.float64)
        if scale != 1.0 or offset != 0.0:
            values = values * scale + offset
        collector.add(first_row, values, valid)


def _read_provider(
    layer: QgsRasterLayer,
    band: int,
    grid: RasterGrid,
    collector: _Collector,
    blocks: Iterable[tuple[int, int]],
) -> None:
    provider = layer.dataProvider()
    nodata = None
    if provider.sourceHasNoDataValue(band) and provider.useSourceNoDataValue(band):
        nodata = float(provider.sourceNoDataValue(band))
    for first_row, n_rows in blocks:
        block = provider.block(band, grid.rows_extent(first_row, n_rows), grid.width, n_rows)
        if block is None or not block.isValid():
            raise QgsProcessingException(
                f"QGIS could not read rows {first_row}-{first_row + n_rows - 1} of band {band} "
                f"of the raster. {provider.error().summary()}"
            )
        dtype = _QGIS_DTYPES.get(int(block.dataType()))
        if dtype is None:
            raise QgsProcessingException(
                f"Band {band} holds values of an unsupported type ({block.dataType()}); "
                "convert the raster to Float32 first (Raster > Conversion > Translate)."
            )
        data = np.frombuffer(bytes(block.data()), dtype=dtype).reshape(n_rows, grid.width)
        block_nodata = float(block.noDataValue()) if block.hasNoDataValue() else nodata
        valid = _valid_values(data, block_nodata)
        if block.hasNoData() and not block.hasNoDataValue():
            # A nodata bitmap without a value (e.g. a masked source): ask per cell.
            for row, col in zip(*np.nonzero(valid)):
                if block.isNoData(int(row), int(col)):
                    valid[row, col] = False
        collector.add(first_row, data.astype(np.float64), valid)


# ---------------------------------------------------------------------------
# Partitions: which polygon holds each cell centre
# ---------------------------------------------------------------------------


@dataclass
class CellPartitions:
    """Polygon of each cell (by its centre).

    Attributes
    ----------
    polygon : ndarray of int32, shape (n,)
        Index into the polygons given, -1 for a cell outside every polygon.
    n_overlapping : int
        Cells whose centre lies in more than one polygon (the last polygon wins).
    """

    polygon: np.ndarray
    n_overlapping: int


def rasterise_partitions(
    grid: RasterGrid,
    rows: np.ndarray,
    cols: np.ndarray,
    polygons_wkb: Sequence[bytes | None],
    *,
    block_cells: int = DEFAULT_BLOCK_CELLS,
    is_cancelled: Callable[[], bool] | None = None,
) -> CellPartitions:
    """Which of ``polygons_wkb`` (in the raster CRS) holds the centre of each cell.

    The polygons are burnt onto the raster grid (GDAL's rule: a cell is
    inside when its centre is), block of rows by block of rows, only over the
    rows that hold cells. ``rows`` must be sorted ascending (reading order).
    """
    from osgeo import gdal, ogr

    n = int(np.asarray(rows).shape[0])
    polygon = np.full(n, -1, dtype=np.int32)
    if n == 0 or not polygons_wkb:
        return CellPartitions(polygon, 0)
    previous = gdal.GetUseExceptions()
    gdal.UseExceptions()
    # The in-memory layer has no CRS on purpose (it is already in the raster's):
    # keep GDAL's warning about it out of the log.
    gdal.PushErrorHandler("CPLQuietErrorHandler")
    try:
        vector = ogr.GetDriverByName("Memory").CreateDataSource("partitions")
        layer = vector.CreateLayer("partitions", geom_type=ogr.wkbMultiPolygon)
        layer.CreateField(ogr.FieldDefn("burn", ogr.OFTInteger))
        definition = layer.GetLayerDefn()
        for index, wkb in enumerate(polygons_wkb):
            if not wkb:
                continue
            feature = ogr.Feature(definition)
            feature.SetField("burn", index + 1)
            feature.SetGeometry(ogr.CreateGeometryFromWkb(bytes(wkb)))
            layer.CreateFeature(feature)
        driver = gdal.GetDriverByName("MEM")
        rows = np.asarray(rows)
        cols = np.asarray(cols)
        n_overlapping = 0
        rows_per_block = max(1, int(block_cells) // max(grid.width, 1))
        start = 0
        while start < n:
            if is_cancelled is not None and is_cancelled():
                raise QgsProcessingException("Cancelled.")
            first_row = int(rows[start])
            n_rows = min(rows_per_block, grid.height - first_row)
            stop = int(np.searchsorted(rows, first_row + n_rows, side="left"))
            target = driver.Create("", grid.width, n_rows, 2, gdal.GDT_Int32)
            x0, dx, _, y0, _, dy = grid.geotransform
            target.SetGeoTransform((x0, dx, 0.0, y0 + first_row * dy, 0.0, dy))
            gdal.RasterizeLayer(target, [1], layer, options=["ATTRIBUTE=burn"])
            gdal.RasterizeLayer(target, [2], layer, burn_values=[1], options=["MERGE_ALG=ADD"])
            burnt = target.GetRasterBand(1).ReadAsArray()
            counts = target.GetRasterBand(2).ReadAsArray()
            local_rows = rows[start:stop] - first_row
            local_cols = cols[start:stop]
            polygon[start:stop] = burnt[local_rows, local_cols] - 1
            n_overlapping += int(np.count_nonzero(counts[local_rows, local_cols] > 1))
            target = None
            start = stop
    finally:
        gdal.PopErrorHandler()
        if not previous:
            gdal.DontUseExceptions()
    return CellPartitions(polygon, n_overlapping)
