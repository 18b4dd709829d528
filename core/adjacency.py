"""Which units are neighbours: sparse adjacency graphs for contiguous clusters.

A PSU must be *connected*: every member reachable from every other through
neighbouring units of the same cluster. "Neighbouring" depends on the data:

* **Lattice** (:func:`lattice_adjacency`): points on a regular, axis-aligned
  grid (raster cell centres, grid points) are neighbours when their cells
  share an edge or a corner (8 neighbours; 4 with ``connectivity=4``). The
  lattice (origin, spacing, size) is inferred from the coordinates *as given*
  (:func:`infer_lattice`; from grid-cell rectangles, :func:`infer_cell_lattice`):
  a 3-arc-second grid is regular in lon/lat but not in projected metres, so
  pass the source-CRS coordinates here. Units already numbered by column and
  row (raster cells) use :func:`cell_adjacency`.
* **Distance** (:func:`distance_adjacency`): irregular points (building
  centroids) are neighbours when they share a Delaunay edge no longer than a
  distance, by default inferred from the data (:func:`default_neighbour_distance`).
  Pass metric coordinates so that the distance is in metres.
* **Polygon** (:func:`polygon_adjacency`): polygons are neighbours when they
  touch or overlap (a shared edge or a shared corner is enough).

:func:`build_adjacency` picks one (``kind="auto"``: lattice when the points
are on a regular grid, else distance) and returns an :class:`AdjacencyInfo`
that also says what was used, so that it can be reported to the user.

Every graph is a symmetric ``scipy.sparse.csr_matrix`` of shape (n, n) with
sorted indices, no self-loops and all stored values 1; nothing n x n is ever
dense.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import sparse
from scipy.sparse.csgraph import connected_components

from .errors import ClusteringInputError

#: Bridging gaps: nearest units first fetched per unit of a light piece, the
#: most fetched before triangulating instead, and the largest share of light
#: units for which the KD-tree search is tried at all.
_BRIDGE_NEIGHBOURS = 16
_BRIDGE_MAX_NEIGHBOURS = 128
_BRIDGE_KDTREE_SHARE = 0.5
#: Lattices up to this many cells per unit (plus a million) index cells densely.
_DENSE_CELLS_PER_UNIT = 8

# A coordinate is "on" the lattice when it lies within this fraction of a
# spacing from a lattice line (float32 lon/lat storage is ~1% of a 3" cell).
LATTICE_TOLERANCE = 0.05
# Sorted gaps between distinct coordinates jumping by more than this factor
# separate float noise (below) from lattice spacings (above).
_NOISE_GAP_RATIO = 20.0

# Default distance threshold for distance adjacency (see
# :func:`default_neighbour_distance`): this factor times the 90th percentile
# of the nearest-neighbour distances ...
DEFAULT_DISTANCE_FACTOR = 2.0
DEFAULT_DISTANCE_PERCENTILE = 90.0
# ... or the k-th longest minimum-spanning-tree edge, k = n / this, capped
# at this factor times the percentile.
DEFAULT_UNITS_PER_GAP = 1000
DEFAULT_MAX_FACTOR = 10.0

ADJACENCY_KINDS = ("auto", "lattice", "distance", "polygon")


# ---------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Lattice:
    """An axis-aligned regular grid: cell centres at ``origin + (col, row) * spacing``.

    Attributes
    ----------
    origin_x, origin_y : float
        Coordinates of the cell at column 0, row 0 (the lattice lines through
        the smallest x and y, fitted to all points).
    spacing_x, spacing_y : float
        Distance between neighbouring columns and rows, in the unit of the
        coordinates it was inferred from.
    n_columns, n_rows : int
        Size of the bounding grid (occupied or not).
    """

    origin_x: float
    origin_y: float
    spacing_x: float
    spacing_y: float
    n_columns: int
    n_rows: int

    def cell_indices(self, xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Column and row (int64) of each point, rounded to the nearest lattice node."""
        xy = np.asarray(xy, dtype=float)
        columns = np.rint((xy[:, 0] - self.origin_x) / self.spacing_x).astype(np.int64)
        rows = np.rint((xy[:, 1] - self.origin_y) / self.spacing_y).astype(np.int64)
        return columns, rows

    def centres(self, columns: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Cell centres (lattice nodes) of the given columns and rows, shape (n, 2)."""
        return np.column_stack(
            [
                self.origin_x + np.asarray(columns) * self.spacing_x,
                self.origin_y + np.asarray(rows) * self.spacing_y,
            ]
        )

    def edge_x(self, column: np.ndarray | int) -> np.ndarray | float:
        """x of the cell edge between ``column - 1`` and ``column``.

        Computed one way only, so the edge shared by two cells is bitwise the
        same number for both and their union has no sliver.
        """
        return self.origin_x + (np.asarray(column) - 0.5) * self.spacing_x

    def edge_y(self, row: np.ndarray | int) -> np.ndarray | float:
        """y of the cell edge between ``row - 1`` and ``row`` (see :meth:`edge_x`)."""
        return self.origin_y + (np.asarray(row) - 0.5) * self.spacing_y


@dataclass(frozen=True)
class AdjacencyInfo:
    """An adjacency graph and how it was built.

    Attributes
    ----------
    matrix : scipy.sparse.csr_matrix
        Symmetric (n, n) graph, values 1, no self-loops.
    kind : str
        ``"lattice"``, ``"distance"`` or ``"polygon"``.
    lattice : Lattice or None
        The inferred lattice, for ``kind == "lattice"``.
    max_distance : float or None
        The longest edge allowed, for ``kind == "distance"`` (unit of the
        coordinates used, metres when metric).
    connectivity : int or None
        4 or 8, for ``kind == "lattice"``.
    """

    matrix: sparse.csr_matrix
    kind: str
    lattice: Lattice | None = None
    max_distance: float | None = None
    connectivity: int | None = None

    @property
    def n_components(self) -> int:
        """Number of connected pieces of the whole graph (1 = no islands)."""
        if self.matrix.shape[0] == 0:
            return 0
        return int(connected_components(self.matrix, directed=False)[0])

    def describe(self) -> str:
        """One line for a log, e.g. ``lattice adjacency (8 neighbours, spacing ...)``."""
        if self.kind == "lattice" and self.lattice is not None:
            return (
                f"lattice adjacency ({self.connectivity} neighbours, spacing "
                f"{self.lattice.spacing_x:.6g} x {self.lattice.spacing_y:.6g})"
            )
        if self.kind == "distance":
            return f"distance adjacency (Delaunay edges up to {self.max_distance:.6g})"
        return f"{self.kind} adjacency"


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------


def _as_points(xy: np.ndarray, name: str = "xy") -> np.ndarray:
    points = np.asarray(xy, dtype=float)
    if points.ndim != 2 or points.shape[1] != 2:
        raise ClusteringInputError(
            f"{name} must be an array of shape (n, 2) with x and y per unit, got shape "
            f"{points.shape}; pass one coordinate pair per unit."
        )
    if not np.all(np.isfinite(points)):
        raise ClusteringInputError(
            f"{name} contains NaN or infinite coordinates; drop units without a geometry "
            "or repair them first."
        )
    return points


def _symmetric_graph(first: np.ndarray, second: np.ndarray, n: int) -> sparse.csr_matrix:
    """Symmetric 0/1 CSR graph from undirected edge lists (duplicates and loops dropped)."""
    first = np.asarray(first, dtype=np.int64)
    second = np.asarray(second, dtype=np.int64)
    not_loop = first != second
    rows = np.concatenate([first[not_loop], second[not_loop]])
    cols = np.concatenate([second[not_loop], first[not_loop]])
    matrix = sparse.csr_matrix((np.ones(rows.size, dtype=np.int8), (rows, cols)), shape=(n, n))
    matrix.sum_duplicates()
    matrix.data[:] = 1
    matrix.sort_indices()
    return matrix


def _axis_lines(values: np.ndarray) -> tuple[float, float] | None:
    """Lattice (spacing, origin) along one axis, or None when not on a lattice.

    Gaps between consecutive distinct values are either float noise within one
    lattice line or a whole number of spacings; when the sorted gaps jump by a
    large factor, the gaps below the jump are noise. A first spacing (the
    median line gap, as most neighbouring lines are occupied, or failing that
    the smallest gap or its half, third or quarter) numbers the lines gap by
    gap; spacing and origin are then fitted to those numbers by least
    squares, and every value must lie within
    ``LATTICE_TOLERANCE`` spacings of its line. One distinct value gives
    ``(nan, value)``: spacing unknown, not irregular.
    """
    distinct = np.unique(values)
    if distinct.size == 1:
        return math.nan, float(distinct[0])
    gaps = np.diff(distinct)
    sorted_gaps = np.sort(gaps)
    ratios = sorted_gaps[1:] / np.maximum(sorted_gaps[:-1], np.finfo(float).tiny)
    noise = 0.0
    if ratios.size and ratios.max() > _NOISE_GAP_RATIO:
        jump = int(np.argmax(ratios))
        noise = float(sorted_gaps[jump])
        sorted_gaps = sorted_gaps[jump + 1 :]
    # The median line gap, else the smallest gap or a small fraction of it (a
    # sparse subset of a grid may have no two neighbouring lines occupied).
    smallest = float(sorted_gaps[0])
    guesses = (float(np.median(sorted_gaps)), smallest, smallest / 2, smallest / 3, smallest / 4)
    for first_guess in guesses:
        steps = np.where(gaps > noise, np.rint(gaps / first_guess), 0.0)
        if np.any((gaps > noise) & (steps == 0)):
            continue
        line_of_distinct = np.concatenate([[0.0], np.cumsum(steps)])
        line = line_of_distinct[np.searchsorted(distinct, values)]
        centred_line = line - line.mean()
        spacing = float((centred_line * (values - values.mean())).sum() / (centred_line**2).sum())
        origin = float(values.mean() - spacing * line.mean())
        if spacing > 0 and np.all(
            np.abs(values - (origin + line * spacing)) <= LATTICE_TOLERANCE * spacing
        ):
            return spacing, origin
    return None


# ---------------------------------------------------------------------------
# Lattice
# ---------------------------------------------------------------------------


def infer_lattice(xy: np.ndarray, min_neighbour_share: float = 0.0) -> Lattice | None:
    """Infer the axis-aligned regular grid the points lie on.

    Parameters
    ----------
    xy : ndarray of shape (n, 2)
        Coordinates in the CRS in which the grid is regular (for a grid made
        in EPSG:4326, lon/lat; not projected metres).
    min_neighbour_share : float, default 0
        Also require that at least this share of the points has another
        point among its 8 neighbouring cells, so that scattered points with
        rounded coordinates (whole metres) are not taken for a fine grid.
        With a share above 0, a single point is no lattice.

    Returns
    -------
    Lattice or None
        None when the points are not on one regular axis-aligned grid (within
        ``LATTICE_TOLERANCE`` of a spacing), or when two points fall in the
        same cell; use :func:`distance_adjacency` then. A single row or column
        gets the other axis's spacing (square cells).
    """
    points = _as_points(xy)
    if points.shape[0] == 0:
        return None
    axis_x = _axis_lines(points[:, 0])
    axis_y = _axis_lines(points[:, 1])
    if axis_x is None or axis_y is None:
        return None
    (spacing_x, line_x), (spacing_y, line_y) = axis_x, axis_y
    if math.isnan(spacing_x) and math.isnan(spacing_y):
        spacing_x = spacing_y = 1.0  # a single point
    elif math.isnan(spacing_x):
        spacing_x = spacing_y
    elif math.isnan(spacing_y):
        spacing_y = spacing_x
    # Origin: the fitted line nearest the smallest coordinate.
    origin_x = line_x + spacing_x * math.floor((points[:, 0].min() - line_x) / spacing_x + 0.5)
    origin_y = line_y + spacing_y * math.floor((points[:, 1].min() - line_y) / spacing_y + 0.5)
    columns = np.rint((points[:, 0] - origin_x) / spacing_x).astype(np.int64)
    rows = np.rint((points[:, 1] - origin_y) / spacing_y).astype(np.int64)
    lattice = Lattice(
        origin_x=origin_x,
        origin_y=origin_y,
        spacing_x=spacing_x,
        spacing_y=spacing_y,
        n_columns=int(columns.max()) + 1,
        n_rows=int(rows.max()) + 1,
    )
    sorted_keys = np.sort(rows * lattice.n_columns + columns)
    if np.any(sorted_keys[1:] == sorted_keys[:-1]):
        return None  # two units in one cell: not a lattice of units
    if min_neighbour_share > 0:
        share = _share_with_a_neighbour(columns, rows, lattice, sorted_keys)
        if share < min_neighbour_share:
            return None
    return lattice


def _share_with_a_neighbour(
    columns: np.ndarray, rows: np.ndarray, lattice: Lattice, sorted_keys: np.ndarray
) -> float:
    """Share of the units with another unit among their 8 neighbouring cells.

    Looks cells up in a boolean grid (or the sorted keys when the grid is
    much larger than the units) a chunk of units at a time: no graph, so the
    memory stays a few bytes per unit even for millions of units.
    """
    n = columns.size
    n_cells = lattice.n_columns * lattice.n_rows
    occupied = None
    if n_cells <= _DENSE_CELLS_PER_UNIT * n + 1_000_000:
        occupied = np.zeros(n_cells, dtype=bool)
        occupied[sorted_keys] = True
    has_neighbour = np.zeros(n, dtype=bool)
    chunk = 1_000_000
    for start in range(0, n, chunk):
        col = columns[start : start + chunk]
        row = rows[start : start + chunk]
        found = has_neighbour[start : start + chunk]
        for d_col in (-1, 0, 1):
            for d_row in (-1, 0, 1):
                if d_col == 0 and d_row == 0:
                    continue
                n_col, n_row = col + d_col, row + d_row
                inside = (n_col >= 0) & (n_col < lattice.n_columns)
                inside &= (n_row >= 0) & (n_row < lattice.n_rows)
                keys = (n_row * lattice.n_columns + n_col)[inside]
                if occupied is not None:
                    hit = occupied[keys]
                else:
                    position = np.minimum(np.searchsorted(sorted_keys, keys), n - 1)
                    hit = sorted_keys[position] == keys
                found[np.flatnonzero(inside)[hit]] = True
    return float(has_neighbour.mean()) if n else 0.0


def infer_cell_lattice(boxes: np.ndarray, min_neighbour_share: float = 0.0) -> Lattice | None:
    """The lattice whose cells are exactly the given axis-aligned rectangles, or None.

    Parameters
    ----------
    boxes : ndarray of shape (n, 4)
        ``xmin, ymin, xmax, ymax`` per unit (e.g. grid-cell polygons).
    min_neighbour_share : float, default 0
        As in :func:`infer_lattice`, for the rectangles' centres.

    Returns
    -------
    Lattice or None
        The lattice of the centres (:func:`infer_lattice`) when every
        rectangle is one whole cell of it: width and height one spacing and
        centre on a node, within ``1e-6`` of a spacing. None otherwise.
    """
    boxes = np.asarray(boxes, dtype=float)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ClusteringInputError(
            f"boxes must be an array of shape (n, 4) with xmin, ymin, xmax, ymax per unit, "
            f"got shape {boxes.shape}; pass one rectangle per unit."
        )
    centres = np.column_stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2])
    lattice = infer_lattice(centres, min_neighbour_share=min_neighbour_share)
    if lattice is None:
        return None
    exact = 1e-6
    size_x, size_y = abs(lattice.spacing_x), abs(lattice.spacing_y)
    nodes = lattice.centres(*lattice.cell_indices(centres))
    if (
        np.abs(boxes[:, 2] - boxes[:, 0] - size_x).max() > exact * size_x
        or np.abs(boxes[:, 3] - boxes[:, 1] - size_y).max() > exact * size_y
        or np.abs(centres[:, 0] - nodes[:, 0]).max() > exact * size_x
        or np.abs(centres[:, 1] - nodes[:, 1]).max() > exact * size_y
    ):
        return None
    return lattice


def _check_connectivity(connectivity: int) -> None:
    if connectivity not in (4, 8):
        raise ClusteringInputError(
            f"connectivity must be 4 or 8, got {connectivity!r}; use 8 to count corner "
            "neighbours, 4 for edge neighbours only."
        )


def _cell_graph(
    columns: np.ndarray, rows: np.ndarray, n_columns: int, n_rows: int, connectivity: int
) -> sparse.csr_matrix:
    """Symmetric graph of the cells (``0 <= column < n_columns``) that touch."""
    n = columns.size
    keys = rows * n_columns + columns
    unit_at = _dense_cell_index(keys, n_columns * n_rows)
    if unit_at is None:
        order = np.argsort(keys, kind="stable")
        sorted_keys = keys[order]
    offsets = [(1, 0), (0, 1)] if connectivity == 4 else [(1, 0), (0, 1), (1, 1), (-1, 1)]
    firsts, seconds = [], []
    for d_col, d_row in offsets:
        n_col = columns + d_col
        n_row = rows + d_row
        inside = (n_col >= 0) & (n_col < n_columns) & (n_row < n_rows)
        source = np.flatnonzero(inside)
        target_keys = n_row[source] * n_columns + n_col[source]
        if unit_at is not None:
            target = unit_at[target_keys]
            found = target >= 0
            firsts.append(source[found])
            seconds.append(target[found])
            continue
        position = np.searchsorted(sorted_keys, target_keys)
        position = np.minimum(position, n - 1)
        found = sorted_keys[position] == target_keys
        firsts.append(source[found])
        seconds.append(order[position[found]])
    return _symmetric_graph(np.concatenate(firsts), np.concatenate(seconds), n)


def _dense_cell_index(keys: np.ndarray, n_cells: int) -> np.ndarray | None:
    """Unit per lattice cell (-1: none) as a dense array, or None.

    None when the lattice is much larger than the number of units (the
    array would cost more than sorting) or when two units share a cell
    (the sorted search then keeps its rule: the first of them).
    """
    n = keys.size
    if n_cells > _DENSE_CELLS_PER_UNIT * n + 1_000_000:
        return None
    unit_at = np.full(n_cells, -1, dtype=np.int64)
    unit_at[keys] = np.arange(n)
    if not np.array_equal(unit_at[keys], np.arange(n)):
        return None
    return unit_at


def lattice_adjacency(
    xy: np.ndarray, lattice: Lattice | None = None, connectivity: int = 8
) -> AdjacencyInfo:
    """Neighbours on a regular grid: cells sharing an edge (and a corner, for 8).

    Parameters
    ----------
    xy : ndarray of shape (n, 2)
        Cell centres in the CRS where the grid is regular.
    lattice : Lattice, optional
        The grid; inferred with :func:`infer_lattice` when omitted.
    connectivity : {8, 4}
        8 = queen (edges and corners), 4 = rook (edges only).

    Returns
    -------
    AdjacencyInfo
        ``kind == "lattice"``.

    Raises
    ------
    ClusteringInputError
        If the points are not on a regular grid, or ``connectivity`` is not 4 or 8.
    """
    points = _as_points(xy)
    _check_connectivity(connectivity)
    if lattice is None:
        lattice = infer_lattice(points)
    if lattice is None:
        raise ClusteringInputError(
            "The points are not on a regular axis-aligned grid, so lattice adjacency is "
            "impossible; use distance adjacency (kind='distance') instead, or pass the "
            "coordinates in the CRS the grid was made in (e.g. lon/lat)."
        )
    columns, rows = lattice.cell_indices(points)
    matrix = _cell_graph(columns, rows, lattice.n_columns, lattice.n_rows, connectivity)
    return AdjacencyInfo(matrix=matrix, kind="lattice", lattice=lattice, connectivity=connectivity)


def cell_adjacency(columns: np.ndarray, rows: np.ndarray, connectivity: int = 8) -> AdjacencyInfo:
    """Neighbours among grid cells given by their integer column and row.

    Parameters
    ----------
    columns, rows : ndarray of int, shape (n,)
        Column and row of each cell (any origin, negative allowed), e.g. the
        cells of a raster or of :meth:`Lattice.cell_indices`.
    connectivity : {8, 4}
        8 = queen (edges and corners), 4 = rook (edges only).

    Returns
    -------
    AdjacencyInfo
        ``kind == "lattice"``, with a unit-spacing lattice whose column 0
        and row 0 are the smallest given.
    """
    _check_connectivity(connectivity)
    columns = np.asarray(columns, dtype=np.int64).reshape(-1)
    rows = np.asarray(rows, dtype=np.int64).reshape(-1)
    if columns.size != rows.size:
        raise ClusteringInputError(
            f"{columns.size} columns for {rows.size} rows; pass one column and one row per cell."
        )
    if columns.size == 0:
        return AdjacencyInfo(
            sparse.csr_matrix((0, 0), dtype=np.int8), "lattice", connectivity=connectivity
        )
    columns = columns - columns.min()
    rows = rows - rows.min()
    lattice = Lattice(
        origin_x=0.0,
        origin_y=0.0,
        spacing_x=1.0,
        spacing_y=1.0,
        n_columns=int(columns.max()) + 1,
        n_rows=int(rows.max()) + 1,
    )
    matrix = _cell_graph(columns, rows, lattice.n_columns, lattice.n_rows, connectivity)
    return AdjacencyInfo(matrix=matrix, kind="lattice", lattice=lattice, connectivity=connectivity)


# ---------------------------------------------------------------------------
# Distance (Delaunay)
# ---------------------------------------------------------------------------


def default_neighbour_distance(xy: np.ndarray) -> float:
    """The default longest edge of :func:`distance_adjacency`.

    The larger of two distances, on the distinct points:

    * ``DEFAULT_DISTANCE_FACTOR`` (2) times the ``DEFAULT_DISTANCE_PERCENTILE``
      (90th) percentile of the nearest-neighbour distances: every unit keeps
      its usual neighbours;
    * the ``k``-th longest edge of the Euclidean minimum spanning tree, with
      ``k = max(1, n // DEFAULT_UNITS_PER_GAP)`` (one per 1000 units), but at
      most ``DEFAULT_MAX_FACTOR`` (10) times that percentile: only the widest
      gaps stay cut, so clumpy data (villages, hamlets, isolated houses) is
      not shattered into hundreds of light islands, while real gaps (sea, a
      wide river, far-apart villages) still separate the data.

    Pass ``max_distance`` to :func:`distance_adjacency` to choose it instead.
    Returns 0.0 for fewer than two distinct points.
    """
    points = np.unique(_as_points(xy), axis=0)
    if points.shape[0] < 2:
        return 0.0
    first, second = _delaunay_edges(points)
    return _default_distance(points, first, second)


def _default_distance(points: np.ndarray, first: np.ndarray, second: np.ndarray) -> float:
    """:func:`default_neighbour_distance` from distinct points and their Delaunay edges."""
    from scipy.sparse.csgraph import minimum_spanning_tree
    from scipy.spatial import cKDTree

    n = points.shape[0]
    distances, _ = cKDTree(points).query(points, k=2)
    percentile = float(np.percentile(distances[:, 1], DEFAULT_DISTANCE_PERCENTILE))
    spacing = DEFAULT_DISTANCE_FACTOR * percentile
    length = np.hypot(*(points[first] - points[second]).T)
    # Zero-length edges cannot occur (points are distinct); the MST of the
    # Delaunay graph is the Euclidean MST.
    graph = sparse.csr_matrix((length, (first, second)), shape=(n, n))
    tree_edges = np.sort(minimum_spanning_tree(graph).data)[::-1]
    if tree_edges.size == 0:
        return spacing
    k = max(1, n // DEFAULT_UNITS_PER_GAP)
    gap = float(tree_edges[min(k, tree_edges.size) - 1])
    return min(max(spacing, gap), DEFAULT_MAX_FACTOR * percentile)


def _delaunay_edges(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Undirected Delaunay edges of distinct points; a chain when they are collinear."""
    n = points.shape[0]
    if n < 2:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    if n >= 3:
        from scipy.spatial import Delaunay

        try:
            simplices = Delaunay(points).simplices.astype(np.int64)
        except Exception:  # noqa: BLE001 (Qhull raises QhullError/ValueError on flat input)
            simplices = None
        if simplices is not None:
            first = np.concatenate([simplices[:, 0], simplices[:, 1], simplices[:, 2]])
            second = np.concatenate([simplices[:, 1], simplices[:, 2], simplices[:, 0]])
            return first, second
    # Collinear: link consecutive points along the line.
    centred = points - points.mean(axis=0)
    direction = np.linalg.svd(centred, full_matrices=False)[2][0]
    order = np.argsort(centred @ direction, kind="stable")
    return order[:-1], order[1:]


def distance_adjacency(xy: np.ndarray, max_distance: float | None = None) -> AdjacencyInfo:
    """Neighbours among irregular points: Delaunay edges not longer than a distance.

    Parameters
    ----------
    xy : ndarray of shape (n, 2)
        Coordinates, metric (metres) so that ``max_distance`` is in metres.
    max_distance : float, optional
        Longest edge kept. Default :func:`default_neighbour_distance`. Pass
        ``math.inf`` to keep every Delaunay edge (a connected graph).

    Returns
    -------
    AdjacencyInfo
        ``kind == "distance"``, ``max_distance`` = the distance used.

    Notes
    -----
    Points at identical coordinates are all linked to the first of them
    (Delaunay sees them once), so none is left without neighbours.
    """
    points = _as_points(xy)
    if max_distance is not None and not (max_distance > 0):  # also rejects NaN
        raise ClusteringInputError(
            f"The neighbour distance must be a positive number, got {max_distance!r}; "
            "give the longest gap (in metres) that units of one cluster may span, or "
            "leave it empty to infer it from the data."
        )
    n = points.shape[0]
    if n == 0:
        return AdjacencyInfo(sparse.csr_matrix((0, 0), dtype=np.int8), "distance", None, 0.0)
    distinct, first_index, inverse = np.unique(
        points, axis=0, return_index=True, return_inverse=True
    )
    inverse = inverse.reshape(-1)
    first, second = _delaunay_edges(distinct)
    if max_distance is None:
        max_distance = _default_distance(distinct, first, second) if distinct.shape[0] > 1 else 0.0
    length = np.hypot(*(distinct[first] - distinct[second]).T)
    keep = length <= max_distance * (1.0 + 1e-9)
    # Map distinct points back to units; duplicates join their representative.
    representative = first_index
    duplicate = np.flatnonzero(representative[inverse] != np.arange(n))
    edges_first = np.concatenate([representative[first[keep]], duplicate])
    edges_second = np.concatenate(
        [representative[second[keep]], representative[inverse[duplicate]]]
    )
    matrix = _symmetric_graph(edges_first, edges_second, n)
    return AdjacencyInfo(matrix=matrix, kind="distance", max_distance=float(max_distance))


def bridge_light_pieces(
    matrix: sparse.spmatrix,
    xy_metric: np.ndarray,
    weights: np.ndarray,
    min_weight: float,
    max_gap: float,
) -> tuple[sparse.csr_matrix, int]:
    """Link pieces of the data too light to be a PSU to their nearest neighbour piece.

    A hamlet whose cells touch no other populated cell is a connected piece
    of its own; with a minimum cluster weight it could only ever be a PSU
    that is too light (``island_under_min``). This adds, for each connected
    piece lighter than ``min_weight``, the shortest link to another piece
    when that gap is at most ``max_gap`` metres, and repeats while a piece
    (possibly just joined) is still light and has a piece within reach.
    Pieces heavy enough to stand alone are never linked to each other, so a
    river between two towns stays a boundary.

    Each round, every light piece takes its shortest link to another piece
    (ties: the lowest unit numbers). A link between two light pieces is
    taken only by the piece of its lower-numbered unit; the other piece
    looks further, often to a heavy piece, in the same round.

    Candidate links: all pairs of units up to ``max_gap`` apart, searched with
    a KD-tree from the light pieces' units only (:class:`_NearestLinks`), or,
    when light units are everywhere, the Delaunay edges of all units (the
    shortest link between a piece and the rest is always one). The two agree
    except in rare configurations where a piece's shortest link that it may
    take is no Delaunay edge.

    Parameters
    ----------
    matrix : scipy.sparse matrix of shape (n, n)
        The neighbour graph (lattice, polygons or distance).
    xy_metric : ndarray of shape (n, 2)
        Coordinates in metres.
    weights : ndarray of shape (n,)
    min_weight : float
        Pieces lighter than this are linked.
    max_gap : float
        Longest link, metres (> 0).

    Returns
    -------
    (graph, n_links)
        The graph with the links added (symmetric CSR) and how many were added.
    """
    graph = sparse.csr_matrix(matrix)
    n = graph.shape[0]
    if n < 2 or not (max_gap > 0):
        return graph, 0
    n_pieces, piece = connected_components(graph, directed=False)
    piece_weight = np.bincount(piece, weights, minlength=n_pieces)
    if not (piece_weight < min_weight).any():
        return graph, 0
    xy = np.asarray(xy_metric, dtype=float)
    links = None
    light_units = int((piece_weight < min_weight)[piece].sum())
    if light_units <= _BRIDGE_KDTREE_SHARE * n:
        links = _NearestLinks(xy, piece, max_gap).links(piece_weight, min_weight)
    if links is None:  # light units everywhere (or crowded): triangulate once
        links = _delaunay_links(graph, xy, weights, min_weight, max_gap)
    first, second = links
    if first.size:
        graph = graph.maximum(_symmetric_graph(first, second, n)).tocsr()
    graph.sort_indices()
    return graph, int(first.size)


def _delaunay_links(
    graph: sparse.csr_matrix,
    xy: np.ndarray,
    weights: np.ndarray,
    min_weight: float,
    max_gap: float,
) -> tuple[np.ndarray, np.ndarray]:
    """The links of :func:`bridge_light_pieces`, candidates from a Delaunay triangulation.

    The shortest link between a piece and the rest of the data is always a
    Delaunay edge, so the candidates are :func:`distance_adjacency`'s edges.
    """
    n = graph.shape[0]
    n_pieces, piece = connected_components(graph, directed=False)
    candidates = sparse.triu(distance_adjacency(xy, max_gap).matrix).tocoo()
    first, second = candidates.row.astype(np.int64), candidates.col.astype(np.int64)
    length = np.hypot(*(xy[first] - xy[second]).T)
    order = np.lexsort((second, first, length))  # shortest first, ties by unit
    first, second = first[order], second[order]
    added_first: list[np.ndarray] = []
    added_second: list[np.ndarray] = []
    while True:
        light = np.bincount(piece, weights, minlength=n_pieces) < min_weight
        across = piece[first] != piece[second]
        touches_light = across & (light[piece[first]] | light[piece[second]])
        if not touches_light.any():
            break
        # The shortest link of each light piece (edges are sorted by length).
        edge = np.flatnonzero(touches_light)
        owner = np.where(light[piece[first[edge]]], piece[first[edge]], piece[second[edge]])
        _, first_of_owner = np.unique(owner, return_index=True)
        chosen = edge[first_of_owner]
        added_first.append(first[chosen])
        added_second.append(second[chosen])
        graph = graph.maximum(_symmetric_graph(first[chosen], second[chosen], n)).tocsr()
        n_pieces, piece = connected_components(graph, directed=False)
    if not added_first:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(added_first), np.concatenate(added_second)


class _NearestLinks:
    """The links of :func:`bridge_light_pieces`, candidates from a KD-tree search.

    Pieces only ever merge, and a piece is light only when all its parts
    were, so every link starts at a unit of a piece that is light at the
    start ("light units"). Each light unit keeps its nearest units within the
    gap, nearest first (ties by unit number); its link is the first of them
    in another piece that its piece may take (see :func:`bridge_light_pieces`).
    When there is none and the list was cut short by its length, a nearer
    link might be missing, so the list is fetched again, twice as long (only
    for those units, only when it could change the answer): exact, without
    triangulating every unit. :meth:`links` gives up (None) when lists grow
    past ``_BRIDGE_MAX_NEIGHBOURS``; the triangulation is then cheaper.
    """

    def __init__(self, xy: np.ndarray, piece: np.ndarray, max_gap: float) -> None:
        from scipy.spatial import cKDTree

        self.xy = xy
        self.piece = piece
        self.reach = max_gap * (1.0 + 1e-9)  # as distance_adjacency: within rounding
        self.tree = cKDTree(xy)
        self.k = min(_BRIDGE_NEIGHBOURS, xy.shape[0])

    def fetch(self, units: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Up to k nearest units within the gap per unit: (distance, unit), inf/-1 padded."""
        k = min(k, self.xy.shape[0])
        distance, neighbour = self.tree.query(self.xy[units], k=k, distance_upper_bound=self.reach)
        distance = distance.reshape(units.size, k)
        neighbour = neighbour.reshape(units.size, k).astype(np.int64)
        neighbour[~np.isfinite(distance)] = -1
        # Nearest first, ties by unit number (so the result does not depend
        # on the tree's internal order).
        order = np.lexsort((np.where(neighbour < 0, self.xy.shape[0], neighbour), distance))
        return np.take_along_axis(distance, order, 1), np.take_along_axis(neighbour, order, 1)

    def links(
        self, piece_weight: np.ndarray, min_weight: float
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """The added links as (first, second), or None when the search gets crowded."""
        light_units = np.flatnonzero((piece_weight < min_weight)[self.piece])
        distance, neighbour = self.fetch(light_units, self.k)
        width = np.full(light_units.size, self.k)
        # Union-find over the starting pieces.
        root = np.arange(piece_weight.size)
        weight = piece_weight.astype(float).copy()
        added_first: list[int] = []
        added_second: list[int] = []
        while True:
            current = _find_all(root, self.piece)
            light_piece = weight[current] < min_weight  # per unit: its piece is light
            source = light_piece[light_units]
            if not source.any():
                break
            rows = np.flatnonzero(source)
            units = light_units[rows]
            own = current[units]
            valid = neighbour[rows] >= 0
            other = np.maximum(neighbour[rows], 0)
            across = valid & (current[other] != own[:, None])
            # A link between two light pieces is the lower-numbered unit's
            # piece's to take: the other piece looks further in the same
            # round (often to a heavy piece).
            across &= (other > units[:, None]) | ~light_piece[other]
            has_link = across.any(axis=1)
            first_across = across.argmax(axis=1)
            length = np.where(has_link, distance[rows, first_across], np.inf)
            target = np.where(has_link, neighbour[rows, first_across], -1)
            # Best link per light piece: shortest, then lowest unit numbers.
            low_end, high_end = np.minimum(units, target), np.maximum(units, target)
            order = np.lexsort((high_end, low_end, length, own))
            first_of_piece = np.r_[True, own[order][1:] != own[order][:-1]]
            best = order[first_of_piece]
            best_length = np.full(root.size, np.inf)
            best_length[own[best]] = length[best]
            # A list cut short by its length holds every unit nearer than its
            # last one, but maybe not all as near: a unit with no link in it,
            # or with its link at that last distance (a tie with a unit left
            # out), might hide a link as short as its piece's best.
            last = width[rows] - 1
            last_distance = distance[rows, last]
            full = valid[np.arange(rows.size), last] & (width[rows] < self.xy.shape[0])
            unsure = (
                full & (last_distance <= best_length[own]) & (~has_link | (length >= last_distance))
            )
            if unsure.any():
                grow = rows[unsure]
                k = 2 * int(width[grow].max())
                if k > _BRIDGE_MAX_NEIGHBOURS:
                    return None
                wider_distance, wider_neighbour = self.fetch(light_units[grow], k)
                if wider_distance.shape[1] > distance.shape[1]:
                    pad = wider_distance.shape[1] - distance.shape[1]
                    distance = np.pad(distance, ((0, 0), (0, pad)), constant_values=np.inf)
                    neighbour = np.pad(neighbour, ((0, 0), (0, pad)), constant_values=-1)
                distance[grow] = np.inf
                neighbour[grow] = -1
                distance[grow, : wider_distance.shape[1]] = wider_distance
                neighbour[grow, : wider_neighbour.shape[1]] = wider_neighbour
                width[grow] = wider_distance.shape[1]
                continue
            linked = best[np.isfinite(length[best])]
            if linked.size == 0:
                break
            for u, v in zip(units[linked].tolist(), target[linked].tolist()):
                added_first.append(u)
                added_second.append(v)
                a, b = _find(root, int(self.piece[u])), _find(root, int(self.piece[v]))
                if a != b:
                    root[b] = a
                    weight[a] += weight[b]
        # (Each link has one owner: no link is added twice.)
        return np.asarray(added_first, dtype=np.int64), np.asarray(added_second, dtype=np.int64)


def _find(root: np.ndarray, item: int) -> int:
    """Root of ``item`` in a union-find array (with path halving)."""
    while root[item] != item:
        root[item] = root[root[item]]
        item = int(root[item])
    return item


def _find_all(root: np.ndarray, items: np.ndarray) -> np.ndarray:
    """Root of every item (vectorised pointer jumping; ``root`` is compressed too)."""
    while True:
        parent = root[root]
        if np.array_equal(parent, root):
            break
        root[:] = parent
    return root[items]


# ---------------------------------------------------------------------------
# Polygons
# ---------------------------------------------------------------------------


def _shapely_major() -> int:
    import shapely

    return int(shapely.__version__.split(".")[0])


def polygon_adjacency(geometries: Sequence, tolerance: float = 0.0) -> AdjacencyInfo:
    """Neighbours among polygons: they touch or overlap (an edge or a corner is enough).

    Parameters
    ----------
    geometries : sequence of shapely geometries
        One per unit; ``None`` or empty geometries get no neighbours.
    tolerance : float
        Also link polygons closer than this (for slivers between cells that
        should touch), in the unit of the geometries. 0 = must touch.

    Returns
    -------
    AdjacencyInfo
        ``kind == "polygon"``.

    Notes
    -----
    Works with shapely 1.8 (a loop over an STRtree) and shapely 2 (vectorised
    STRtree query).
    """
    if not (tolerance >= 0):
        raise ClusteringInputError(
            f"tolerance must be >= 0, got {tolerance!r}; use 0 for polygons that must touch."
        )
    geometries = list(geometries)
    n = len(geometries)
    valid = [
        i for i, geometry in enumerate(geometries) if geometry is not None and not geometry.is_empty
    ]
    if len(valid) < 2:
        return AdjacencyInfo(sparse.csr_matrix((n, n), dtype=np.int8), "polygon")
    valid_geometries = [geometries[i] for i in valid]
    valid_index = np.asarray(valid, dtype=np.int64)

    if _shapely_major() >= 2:
        import shapely

        tree = shapely.STRtree(valid_geometries)
        if tolerance == 0:
            left, right = tree.query(valid_geometries, predicate="intersects")
        else:
            bounds = shapely.bounds(np.asarray(valid_geometries, dtype=object))
            grown = shapely.box(
                bounds[:, 0] - tolerance,
                bounds[:, 1] - tolerance,
                bounds[:, 2] + tolerance,
                bounds[:, 3] + tolerance,
            )
            left, right = tree.query(grown)
            geoms = np.asarray(valid_geometries, dtype=object)
            near = shapely.distance(geoms[left], geoms[right]) <= tolerance
            left, right = left[near], right[near]
        first, second = valid_index[left], valid_index[right]
    else:
        from shapely.geometry import box
        from shapely.strtree import STRtree

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # shapely 1.8 warns that STRtree changes in 2.0
            tree = STRtree(valid_geometries, items=list(range(len(valid))))
        firsts: list[int] = []
        seconds: list[int] = []
        for position, geometry in enumerate(valid_geometries):
            if tolerance == 0:
                query = geometry
            else:
                x0, y0, x1, y1 = geometry.bounds
                query = box(x0 - tolerance, y0 - tolerance, x1 + tolerance, y1 + tolerance)
            for other in tree.query_items(query):
                if other <= position:
                    continue
                candidate = valid_geometries[other]
                if tolerance == 0:
                    linked = geometry.intersects(candidate)
                else:
                    linked = geometry.distance(candidate) <= tolerance
                if linked:
                    firsts.append(position)
                    seconds.append(other)
        first = valid_index[np.asarray(firsts, dtype=np.int64)]
        second = valid_index[np.asarray(seconds, dtype=np.int64)]
    return AdjacencyInfo(matrix=_symmetric_graph(first, second, n), kind="polygon")


# ---------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------


def build_adjacency(
    xy: np.ndarray,
    kind: str = "auto",
    neighbour_distance: float | None = None,
    *,
    xy_metric: np.ndarray | None = None,
    geometries: Sequence | None = None,
    connectivity: int = 8,
) -> AdjacencyInfo:
    """Build the neighbour graph of the units.

    Parameters
    ----------
    xy : ndarray of shape (n, 2)
        Coordinates in the source CRS (the one a grid is regular in).
    kind : {"auto", "lattice", "distance", "polygon"}
        ``"auto"``: lattice when ``xy`` lies on a regular grid; otherwise
        polygon when ``geometries`` is given; otherwise distance.
    neighbour_distance : float, optional
        Longest edge for distance adjacency (unit of ``xy_metric``, metres);
        default inferred (:func:`default_neighbour_distance`). Ignored by
        lattice and polygon adjacency (cells and polygons must touch).
    xy_metric : ndarray of shape (n, 2), optional
        Metric coordinates for distance adjacency; default ``xy``.
    geometries : sequence of shapely geometries, optional
        Unit polygons, for ``kind="polygon"`` (or ``"auto"`` on irregular data).
    connectivity : {8, 4}
        Lattice neighbours (8 = edges and corners).

    Returns
    -------
    AdjacencyInfo
    """
    if kind not in ADJACENCY_KINDS:
        raise ClusteringInputError(
            f"Unknown adjacency kind {kind!r}; use one of {', '.join(ADJACENCY_KINDS)}."
        )
    points = _as_points(xy)
    metric = points if xy_metric is None else _as_points(xy_metric, "xy_metric")
    if metric.shape != points.shape:
        raise ClusteringInputError(
            f"xy_metric has shape {metric.shape} but xy has {points.shape}; pass the same "
            "units in both, in the same order."
        )
    if geometries is not None and len(geometries) != points.shape[0]:
        raise ClusteringInputError(
            f"{len(geometries)} geometries for {points.shape[0]} units; pass one geometry "
            "per unit, in the order of xy."
        )
    if kind == "lattice":
        return lattice_adjacency(points, connectivity=connectivity)
    if kind == "distance":
        return distance_adjacency(metric, neighbour_distance)
    if kind == "polygon":
        if geometries is None:
            raise ClusteringInputError(
                "kind='polygon' needs the unit polygons; pass geometries=..., or use kind='auto'."
            )
        return polygon_adjacency(geometries)
    lattice = infer_lattice(points)
    if lattice is not None:
        return lattice_adjacency(points, lattice=lattice, connectivity=connectivity)
    if geometries is not None:
        return polygon_adjacency(geometries)
    return distance_adjacency(metric, neighbour_distance)
