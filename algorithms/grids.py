"""Units on a regular grid: finding the grid, and the canonical order of its units.

Grid points (a population grid exported as points) and grid cells (square
polygons, raster cells) sit on a regular lattice (core's ``Lattice``). Knowing
it gives the 8-neighbour graph for free, the exact cell outlines of clusters
(:mod:`.outlines`), and one canonical order -- row-major from the north-west,
as a raster is read -- in which core sees the units, so that a raster and the
same cells as points or polygons give the same clusters whatever the order of
the features in a file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # core.adjacency needs scipy: imported where used
    from ..core.adjacency import Lattice
    from .common import Units


@dataclass(frozen=True)
class RegularGrid:
    """Units on a regular grid: the grid (core's ``Lattice``) and each unit's column and row."""

    lattice: Lattice
    column: np.ndarray
    row: np.ndarray


# Points count as a regular grid (core's infer_lattice) when at least this
# share of them has a neighbouring grid point.
GRID_MIN_ADJACENT_SHARE = 0.5


def detect_regular_grid(xy: np.ndarray) -> RegularGrid | None:
    """The regular grid ``xy`` sits on, or None.

    The grid is core's :func:`~tuned_grid_clustering.core.adjacency.infer_lattice`
    (every point near a grid node, no two in one cell), with at least
    ``GRID_MIN_ADJACENT_SHARE`` of the points having another point among
    their 8 neighbouring cells (so scattered points with rounded coordinates
    are not mistaken for a fine grid, and a single point is no grid).
    """
    from ..core.adjacency import infer_lattice

    if not np.isfinite(xy).all():
        return None
    lattice = infer_lattice(xy, min_neighbour_share=GRID_MIN_ADJACENT_SHARE)
    if lattice is None:
        return None
    return _grid_of_points(lattice, xy)


def _grid_of_points(lattice: Lattice, xy: np.ndarray) -> RegularGrid:
    """``RegularGrid`` of points on ``lattice``; int32 indices (kept for every unit)."""
    columns, rows = lattice.cell_indices(xy)
    return RegularGrid(lattice, columns.astype(np.int32), rows.astype(np.int32))


def grid_of_rectangles(boxes: np.ndarray) -> RegularGrid | None:
    """The regular grid whose cells are exactly ``boxes`` (xmin, ymin, xmax, ymax), or None.

    Core's ``infer_cell_lattice``, with the neighbour share of
    :func:`detect_regular_grid`.
    """
    from ..core.adjacency import infer_cell_lattice

    lattice = infer_cell_lattice(boxes, min_neighbour_share=GRID_MIN_ADJACENT_SHARE)
    if lattice is None:
        return None
    centres = np.column_stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2])
    return _grid_of_points(lattice, centres)


def unit_grid(units: Units) -> RegularGrid | None:
    """The regular grid the units sit on (grid cells or grid points), or None.

    Polygons count when every one is an axis-aligned rectangle of one
    regular grid (``read_units(..., collect_rectangles=True)``); points when
    :func:`detect_regular_grid` finds their grid in the layer CRS.
    """
    if units.is_polygon:
        if units.rectangle_boxes is None or units.rectangle_boxes.shape[0] != units.n:
            return None
        return grid_of_rectangles(units.rectangle_boxes)
    return detect_regular_grid(units.xy)


def canonical_order(columns: np.ndarray, rows_up: np.ndarray) -> np.ndarray | None:
    """Row-major order from the north-west corner, or None when the units are already in it.

    Rows from the top (largest y) down, columns from west to east: the order
    in which a north-up raster is read. Clustering grid units in this order
    makes the result independent of the order of the features in a file, so
    a raster and the same cells as points or polygons give the same clusters.

    Parameters
    ----------
    columns : ndarray of int
        Column of each unit, increasing eastwards.
    rows_up : ndarray of int
        Row of each unit, increasing northwards.
    """
    columns = np.asarray(columns)
    rows_up = np.asarray(rows_up)
    if _row_major_already(columns, rows_up):  # a north-up raster: nothing to sort
        return None
    return np.lexsort((columns, -rows_up))


def _row_major_already(columns: np.ndarray, rows_up: np.ndarray) -> bool:
    """True when units run row by row from the top, west to east within a row."""
    chunk = 1_000_000  # a chunk at a time: a few bytes per unit, not a copy of every column
    for start in range(0, max(rows_up.size - 1, 0), chunk):
        rows = rows_up[start : start + chunk + 1]
        row_step = np.diff(rows)
        if (row_step > 0).any():
            return False
        if not (np.diff(columns[start : start + chunk + 1])[row_step == 0] > 0).all():
            return False
    return True


def grid_order(grid: RegularGrid) -> np.ndarray | None:
    """:func:`canonical_order` of the units of ``grid``."""
    return canonical_order(
        grid.column * (1 if grid.lattice.spacing_x > 0 else -1),
        grid.row * (1 if grid.lattice.spacing_y > 0 else -1),
    )
