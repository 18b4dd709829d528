"""Adjacency graphs: lattice inference, lattice / distance / polygon neighbours."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.sparse.csgraph import connected_components
from shapely.geometry import Polygon, box

from tuned_grid_clustering.core.adjacency import (
    AdjacencyInfo,
    Lattice,
    build_adjacency,
    cell_adjacency,
    default_neighbour_distance,
    distance_adjacency,
    infer_cell_lattice,
    infer_lattice,
    lattice_adjacency,
    polygon_adjacency,
)
from tuned_grid_clustering.core.errors import ClusteringInputError


def grid_points(n_cols: int, n_rows: int, spacing=(1.0, 1.0), origin=(0.0, 0.0)) -> np.ndarray:
    cols, rows = np.meshgrid(np.arange(n_cols), np.arange(n_rows))
    return np.column_stack(
        [origin[0] + cols.ravel() * spacing[0], origin[1] + rows.ravel() * spacing[1]]
    )


def neighbours(info: AdjacencyInfo, unit: int) -> set[int]:
    matrix = info.matrix
    return set(matrix.indices[matrix.indptr[unit] : matrix.indptr[unit + 1]].tolist())


def assert_clean_graph(info: AdjacencyInfo, n: int) -> None:
    matrix = info.matrix
    assert matrix.shape == (n, n)
    assert (matrix != matrix.T).nnz == 0, "graph must be symmetric"
    assert matrix.diagonal().sum() == 0, "no self-loops"
    assert set(np.unique(matrix.data).tolist()) <= {1}


# ---------------------------------------------------------------------------
# infer_lattice
# ---------------------------------------------------------------------------


def test_infer_lattice_regular_grid_with_holes():
    xy = grid_points(6, 4, spacing=(2.0, 3.0), origin=(10.0, -5.0))
    xy = np.delete(xy, [3, 7, 8], axis=0)  # missing cells are fine
    lattice = infer_lattice(xy)
    assert lattice is not None
    assert lattice.spacing_x == pytest.approx(2.0)
    assert lattice.spacing_y == pytest.approx(3.0)
    assert (lattice.origin_x, lattice.origin_y) == pytest.approx((10.0, -5.0))
    assert (lattice.n_columns, lattice.n_rows) == (6, 4)


def test_infer_lattice_lonlat_with_float_noise():
    # A 3-arc-second grid in degrees, stored with float32-like noise.
    step = 1 / 1200
    xy = grid_points(30, 20, spacing=(step, step), origin=(125.38, 7.7425))
    noisy = xy + np.random.default_rng(0).uniform(-2e-6, 2e-6, xy.shape)
    lattice = infer_lattice(noisy)
    assert lattice is not None
    assert lattice.spacing_x == pytest.approx(step, rel=1e-2)
    columns, rows = lattice.cell_indices(noisy)
    assert columns.max() == 29 and rows.max() == 19


def test_infer_lattice_rejects_irregular_points():
    xy = np.random.default_rng(1).uniform(0, 100, (200, 2))
    assert infer_lattice(xy) is None


def test_infer_lattice_rejects_jittered_grid():
    xy = grid_points(10, 10) + np.random.default_rng(2).uniform(-0.3, 0.3, (100, 2))
    assert infer_lattice(xy) is None


def test_infer_lattice_rejects_two_points_in_one_cell():
    xy = np.vstack([grid_points(3, 3), [[1.0, 1.0]]])
    assert infer_lattice(xy) is None


def test_infer_lattice_single_row_uses_square_cells():
    xy = grid_points(5, 1, spacing=(0.5, 1.0))
    lattice = infer_lattice(xy)
    assert lattice is not None
    assert lattice.spacing_y == pytest.approx(0.5)


def test_infer_lattice_single_point():
    assert infer_lattice(np.array([[3.0, 4.0]])) is not None


def test_infer_lattice_min_neighbour_share_rejects_scattered_rounded_points():
    # Whole-metre coordinates sit on a 1 m lattice, but hardly any point has a neighbour.
    scattered = np.round(np.random.default_rng(2).uniform(0, 5000, size=(300, 2)))
    assert infer_lattice(scattered) is not None
    assert infer_lattice(scattered, min_neighbour_share=0.5) is None
    assert infer_lattice(grid_points(5, 4), min_neighbour_share=0.5) is not None
    assert infer_lattice(np.array([[3.0, 4.0]]), min_neighbour_share=0.5) is None


def test_lattice_centres_and_shared_edges():
    lattice = Lattice(10.0, 20.0, 2.0, -3.0, n_columns=4, n_rows=3)
    np.testing.assert_allclose(lattice.centres([0, 3], [0, 2]), [[10.0, 20.0], [16.0, 14.0]])
    assert lattice.edge_x(1) == pytest.approx(11.0)
    assert lattice.edge_y(1) == pytest.approx(18.5)


def test_infer_cell_lattice_whole_cells_only():
    centres = grid_points(6, 4, spacing=(2.0, 3.0), origin=(10.0, -5.0))
    boxes = np.column_stack([centres - [1.0, 1.5], centres + [1.0, 1.5]])
    lattice = infer_cell_lattice(boxes)
    assert lattice is not None
    assert (lattice.spacing_x, lattice.spacing_y) == pytest.approx((2.0, 3.0))
    assert (lattice.origin_x, lattice.origin_y) == pytest.approx((10.0, -5.0))
    # Rectangles smaller than a cell (centres on the grid) are not its cells.
    assert infer_cell_lattice(np.column_stack([centres - 0.5, centres + 0.5])) is None
    with pytest.raises(ClusteringInputError, match="shape"):
        infer_cell_lattice(centres)


# ---------------------------------------------------------------------------
# lattice_adjacency
# ---------------------------------------------------------------------------


def test_lattice_adjacency_eight_and_four_neighbours():
    xy = grid_points(3, 3)
    queen = lattice_adjacency(xy)
    assert_clean_graph(queen, 9)
    assert queen.kind == "lattice" and queen.connectivity == 8
    assert neighbours(queen, 4) == {0, 1, 2, 3, 5, 6, 7, 8}
    assert neighbours(queen, 0) == {1, 3, 4}
    rook = lattice_adjacency(xy, connectivity=4)
    assert neighbours(rook, 4) == {1, 3, 5, 7}
    assert neighbours(rook, 0) == {1, 3}


def test_lattice_adjacency_does_not_wrap_rows():
    xy = grid_points(4, 3)
    info = lattice_adjacency(xy)
    # Unit 3 is the end of row 0; unit 4 starts row 1: not neighbours.
    assert 4 not in neighbours(info, 3)
    assert neighbours(info, 3) == {2, 6, 7}


def test_lattice_adjacency_river_gap_splits_the_grid():
    xy = grid_points(7, 5)
    xy = xy[xy[:, 0] != 3.0]  # an empty column
    info = lattice_adjacency(xy)
    count, component = connected_components(info.matrix, directed=False)
    assert count == 2
    assert info.n_components == 2
    left = xy[:, 0] < 3
    assert len(set(component[left])) == 1 and len(set(component[~left])) == 1


def test_lattice_adjacency_diagonal_touch_connects():
    xy = np.array([[0.0, 0.0], [1.0, 1.0], [3.0, 3.0]])
    info = lattice_adjacency(xy)
    assert neighbours(info, 0) == {1}
    assert neighbours(info, 2) == set()


def test_lattice_adjacency_in_lonlat_order_independent():
    xy = grid_points(8, 6, spacing=(1 / 1200, 1 / 1200), origin=(120.0, 14.0))
    order = np.random.default_rng(3).permutation(xy.shape[0])
    direct = lattice_adjacency(xy).matrix
    shuffled = lattice_adjacency(xy[order]).matrix
    inverse = np.argsort(order)
    assert (shuffled[inverse][:, inverse] != direct).nnz == 0


def test_lattice_adjacency_rejects_irregular_points():
    with pytest.raises(ClusteringInputError, match="distance"):
        lattice_adjacency(np.random.default_rng(4).uniform(0, 10, (50, 2)))


def test_cell_adjacency_matches_lattice_adjacency():
    xy = np.delete(grid_points(7, 5), [4, 11, 12, 20], axis=0)
    lattice = infer_lattice(xy)
    columns, rows = lattice.cell_indices(xy)
    for connectivity in (8, 4):
        expected = lattice_adjacency(xy, connectivity=connectivity).matrix
        # Any origin: shifted (even negative) indices give the same graph.
        info = cell_adjacency(columns - 3, rows + 2, connectivity=connectivity)
        assert info.kind == "lattice" and info.connectivity == connectivity
        assert (info.matrix != expected).nnz == 0
    assert cell_adjacency([], []).matrix.shape == (0, 0)
    with pytest.raises(ClusteringInputError, match="rows"):
        cell_adjacency([0, 1], [0])


def test_lattice_adjacency_rejects_bad_connectivity():
    with pytest.raises(ClusteringInputError, match="connectivity"):
        lattice_adjacency(grid_points(2, 2), connectivity=6)


# ---------------------------------------------------------------------------
# distance_adjacency
# ---------------------------------------------------------------------------


def test_distance_adjacency_default_distance_and_far_point():
    rng = np.random.default_rng(5)
    xy = grid_points(10, 10, spacing=(10.0, 10.0)) + rng.uniform(-2, 2, (100, 2))
    xy = np.vstack([xy, [[500.0, 500.0]]])  # far away: an island
    info = distance_adjacency(xy)
    assert_clean_graph(info, 101)
    assert info.kind == "distance"
    assert info.max_distance == pytest.approx(default_neighbour_distance(xy))
    # Capped at 10 x the 90th-percentile nearest-neighbour distance (~10 m).
    assert 10.0 < info.max_distance < 150.0
    assert neighbours(info, 100) == set()
    count, _ = connected_components(info.matrix[:100, :100], directed=False)
    assert count == 1
    # No edge is longer than the threshold.
    rows, cols = info.matrix.nonzero()
    lengths = np.hypot(*(xy[rows] - xy[cols]).T)
    assert lengths.max() <= info.max_distance


def test_default_distance_bridges_small_gaps_not_large_ones():
    rng = np.random.default_rng(9)
    # 30 hamlets of 40 houses, 10 m apart inside, 60-80 m of fields between.
    hamlets = [
        grid_points(8, 5, spacing=(10.0, 10.0), origin=(i * 140.0 + (i % 3) * 10, 0.0))
        for i in range(30)
    ]
    village = np.vstack(hamlets) + rng.uniform(-1, 1, (1200, 2))
    far = village + [50_000.0, 0.0]  # a second village 50 km away
    info = distance_adjacency(np.vstack([village, far]))
    assert info.n_components == 2  # hamlets joined, villages apart


def test_distance_adjacency_explicit_distance_and_infinity():
    xy = np.array([[0.0, 0.0], [1.0, 0.0], [5.0, 0.0], [5.0, 1.0]])
    near = distance_adjacency(xy, max_distance=2.0)
    assert near.max_distance == 2.0
    assert neighbours(near, 0) == {1} and neighbours(near, 2) == {3}
    everything = distance_adjacency(xy, max_distance=math.inf)
    assert everything.n_components == 1


def test_distance_adjacency_duplicates_and_collinear_points():
    xy = np.array([[0.0, 0.0], [0.0, 0.0], [1.0, 0.0], [2.0, 0.0], [3.0, 0.0]])
    info = distance_adjacency(xy, max_distance=1.5)
    assert neighbours(info, 1) == {0}  # the duplicate joins its twin
    assert neighbours(info, 3) == {2, 4}
    assert info.n_components == 1


def test_distance_adjacency_rejects_bad_distance():
    with pytest.raises(ClusteringInputError, match="neighbour distance"):
        distance_adjacency(grid_points(3, 3), max_distance=-1.0)


def test_distance_adjacency_tiny_inputs():
    assert distance_adjacency(np.array([[1.0, 2.0]])).matrix.nnz == 0
    assert distance_adjacency(np.array([[0.0, 0.0], [1.0, 0.0]]), 2.0).matrix.nnz == 2


# ---------------------------------------------------------------------------
# polygon_adjacency
# ---------------------------------------------------------------------------


def test_polygon_adjacency_corner_and_edge_touch():
    squares = [
        box(0, 0, 1, 1),  # 0
        box(1, 0, 2, 1),  # 1 shares an edge with 0
        box(2, 1, 3, 2),  # 2 touches 1 by a corner only
        box(5, 5, 6, 6),  # 3 alone
    ]
    info = polygon_adjacency(squares)
    assert_clean_graph(info, 4)
    assert info.kind == "polygon"
    assert neighbours(info, 0) == {1}
    assert neighbours(info, 1) == {0, 2}
    assert neighbours(info, 2) == {1}
    assert neighbours(info, 3) == set()


def test_polygon_adjacency_missing_geometries_and_tolerance():
    gap = 1e-7
    shapes = [box(0, 0, 1, 1), None, Polygon(), box(1 + gap, 0, 2, 1)]
    assert neighbours(polygon_adjacency(shapes), 0) == set()
    loose = polygon_adjacency(shapes, tolerance=1e-6)
    assert neighbours(loose, 0) == {3}
    assert neighbours(loose, 1) == set() and neighbours(loose, 2) == set()


def test_polygon_adjacency_grid_cells_match_lattice():
    xy = grid_points(5, 4)
    cells = [box(x - 0.5, y - 0.5, x + 0.5, y + 0.5) for x, y in xy]
    polygons = polygon_adjacency(cells).matrix
    lattice = lattice_adjacency(xy).matrix
    assert (polygons != lattice).nnz == 0


# ---------------------------------------------------------------------------
# build_adjacency
# ---------------------------------------------------------------------------


def test_build_adjacency_auto_picks_lattice_or_distance():
    lonlat = grid_points(6, 6, spacing=(1 / 1200, 1 / 1200), origin=(121.0, 14.5))
    metric = lonlat * 100_000.0
    info = build_adjacency(lonlat, xy_metric=metric)
    assert info.kind == "lattice" and info.lattice is not None
    assert "lattice" in info.describe()

    rng = np.random.default_rng(6)
    scattered = rng.uniform(0, 1000, (80, 2))
    info = build_adjacency(scattered, neighbour_distance=400.0)
    assert info.kind == "distance" and info.max_distance == 400.0
    assert "400" in info.describe()


def test_build_adjacency_distance_uses_metric_coordinates():
    lonlat = np.array([[0.0, 0.0], [0.001, 0.0], [0.5, 0.5]])
    metric = np.array([[0.0, 0.0], [100.0, 0.0], [50_000.0, 50_000.0]])
    info = build_adjacency(lonlat, kind="distance", neighbour_distance=150.0, xy_metric=metric)
    assert neighbours(info, 0) == {1} and neighbours(info, 2) == set()


def test_build_adjacency_polygons_when_irregular():
    rng = np.random.default_rng(7)
    xy = rng.uniform(0, 10, (5, 2))
    shapes = [box(i, 0, i + 1, 1) for i in range(5)]
    info = build_adjacency(xy, geometries=shapes)
    assert info.kind == "polygon"
    assert neighbours(info, 2) == {1, 3}


def test_build_adjacency_errors():
    with pytest.raises(ClusteringInputError, match="Unknown adjacency kind"):
        build_adjacency(grid_points(2, 2), kind="rook")
    with pytest.raises(ClusteringInputError, match="regular"):
        build_adjacency(np.random.default_rng(8).uniform(0, 1, (20, 2)), kind="lattice")
    with pytest.raises(ClusteringInputError, match="geometries"):
        build_adjacency(grid_points(2, 2), kind="polygon")
    with pytest.raises(ClusteringInputError, match="shape"):
        build_adjacency(np.zeros((4, 3)))
    with pytest.raises(ClusteringInputError, match="NaN"):
        build_adjacency(np.array([[0.0, np.nan]]))
    with pytest.raises(ClusteringInputError, match="xy_metric"):
        build_adjacency(grid_points(2, 2), xy_metric=np.zeros((3, 2)))


# ---------------------------------------------------------------------------
# Fast paths: same graphs as the plain algorithms
# ---------------------------------------------------------------------------


def _sorted_search_cell_graph(columns, rows, n_columns, n_rows, connectivity):
    """The lattice graph by sorted search only (no dense cell index)."""
    import tuned_grid_clustering.core.adjacency as adjacency

    original = adjacency._DENSE_CELLS_PER_UNIT
    adjacency._DENSE_CELLS_PER_UNIT = -(10**9)  # never dense
    try:
        return adjacency._cell_graph(columns, rows, n_columns, n_rows, connectivity)
    finally:
        adjacency._DENSE_CELLS_PER_UNIT = original


@pytest.mark.parametrize("seed", range(4))
def test_dense_cell_index_gives_the_sorted_search_graph(seed):
    from tuned_grid_clustering.core.adjacency import _cell_graph

    rng = np.random.default_rng(seed)
    n_columns, n_rows = 23, 17
    cells = rng.choice(n_columns * n_rows, size=250, replace=seed % 2 == 1)  # odd: shared cells
    columns, rows = cells % n_columns, cells // n_columns
    for connectivity in (4, 8):
        fast = _cell_graph(columns, rows, n_columns, n_rows, connectivity)
        slow = _sorted_search_cell_graph(columns, rows, n_columns, n_rows, connectivity)
        assert (fast != slow).nnz == 0


def _reference_bridges(matrix, xy, weights, min_weight, max_gap):
    """Rounds of 'every light piece takes its shortest link it may take', by brute force."""
    n_pieces, piece = connected_components(matrix, directed=False)
    distance = np.hypot(*(xy[:, None, :] - xy[None, :, :]).transpose(2, 0, 1))
    links = []
    while True:
        chosen = []
        light = np.bincount(piece, weights, minlength=piece.max() + 1) < min_weight
        for own in np.flatnonzero(light):
            best = None
            for u in np.flatnonzero(piece == own):
                for v in np.flatnonzero((piece != own) & (distance[u] <= max_gap * (1 + 1e-9))):
                    # A link between light pieces is the lower-numbered unit's piece's.
                    if light[piece[v]] and v < u:
                        continue
                    key = (distance[u, v], min(u, v), max(u, v))
                    best = key if best is None or key < best else best
            if best is not None:
                chosen.append(best[1:])
        if not chosen:
            return links
        for u, v in chosen:
            links.append((int(u), int(v)))
            piece[piece == piece[v]] = piece[u]


@pytest.mark.parametrize("neighbours", [1, 3, 16])
@pytest.mark.parametrize("seed", range(6))
def test_bridge_light_pieces_takes_each_light_piece_s_shortest_link(monkeypatch, seed, neighbours):
    import tuned_grid_clustering.core.adjacency as adjacency

    # The KD-tree search always; short lists force the "fetch a longer list" path.
    monkeypatch.setattr(adjacency, "_BRIDGE_KDTREE_SHARE", 1.0)
    monkeypatch.setattr(adjacency, "_BRIDGE_MAX_NEIGHBOURS", 10**6)
    monkeypatch.setattr(adjacency, "_BRIDGE_NEIGHBOURS", neighbours)
    rng = np.random.default_rng(seed)
    centres = rng.random((10, 2)) * 2000
    xy = centres[rng.integers(0, 10, 120)] + rng.normal(0, 80, (120, 2))
    if seed % 2:
        xy = np.round(xy / 40) * 40  # ties and shared positions
    weights = rng.random(120) * 3
    graph = distance_adjacency(xy, 45.0).matrix
    for min_weight, max_gap in ((12, 150), (40, 500), (150, 5000)):
        bridged, n_links = adjacency.bridge_light_pieces(graph, xy, weights, min_weight, max_gap)
        expected = _reference_bridges(graph, xy, weights, min_weight, max_gap)
        added = sparse_pairs(bridged) - sparse_pairs(graph)
        assert added == {(min(e), max(e)) for e in expected if graph[e[0], e[1]] == 0}
        assert n_links == len(expected)
        assert (bridged != bridged.T).nnz == 0


@pytest.mark.parametrize("seed", range(4))
def test_bridge_light_pieces_triangulates_when_the_search_gets_crowded(monkeypatch, seed):
    import tuned_grid_clustering.core.adjacency as adjacency

    rng = np.random.default_rng(seed)
    xy = rng.random((200, 2)) * 3000
    weights = rng.random(200)
    graph = distance_adjacency(xy, 60.0).matrix
    monkeypatch.setattr(adjacency, "_BRIDGE_KDTREE_SHARE", -1.0)  # always triangulate
    triangulated = adjacency.bridge_light_pieces(graph, xy, weights, 20.0, 2000.0)
    monkeypatch.setattr(adjacency, "_BRIDGE_KDTREE_SHARE", 1.0)
    monkeypatch.setattr(adjacency, "_BRIDGE_NEIGHBOURS", 2)
    monkeypatch.setattr(adjacency, "_BRIDGE_MAX_NEIGHBOURS", 2)  # gives up at once
    gave_up = adjacency.bridge_light_pieces(graph, xy, weights, 20.0, 2000.0)
    assert triangulated[1] == gave_up[1] > 0
    assert (triangulated[0] != gave_up[0]).nnz == 0


def sparse_pairs(matrix) -> set:
    coo = matrix.tocoo()
    return {(int(a), int(b)) for a, b in zip(coo.row, coo.col) if a < b}


def test_bridge_light_pieces_keeps_heavy_pieces_apart():
    # Two heavy towns 300 m apart and a light hamlet 200 m from the left one.
    town_a = grid_points(3, 3, spacing=(10.0, 10.0))
    town_b = grid_points(3, 3, spacing=(10.0, 10.0), origin=(320.0, 0.0))
    hamlet = np.array([[-200.0, 10.0]])
    xy = np.vstack([town_a, town_b, hamlet])
    weights = np.r_[np.full(18, 5.0), 1.0]
    graph = distance_adjacency(xy, 15.0).matrix
    from tuned_grid_clustering.core.adjacency import bridge_light_pieces

    bridged, n_links = bridge_light_pieces(graph, xy, weights, 20.0, 1000.0)
    assert n_links == 1
    assert sparse_pairs(bridged) - sparse_pairs(graph) == {(3, 18)}  # hamlet to (0, 10)
    assert connected_components(bridged, directed=False)[0] == 2


@pytest.mark.parametrize("spread", [1, 4000])  # dense cell grid / sorted-keys lookup
def test_neighbour_share_matches_the_graph(spread):
    from tuned_grid_clustering.core.adjacency import _cell_graph, _share_with_a_neighbour

    rng = np.random.default_rng(spread)
    cells = rng.choice(60 * 60 * spread, size=1500, replace=False)
    xy = np.column_stack([cells % (60 * spread), cells // (60 * spread)]).astype(float)
    xy = np.vstack([xy, [[0.0, 0.0], [1.0, 0.0]]]) if not (xy == 0).all(axis=1).any() else xy
    xy = np.unique(xy, axis=0)
    lattice = infer_lattice(xy)
    columns, rows = lattice.cell_indices(xy)
    graph = _cell_graph(columns, rows, lattice.n_columns, lattice.n_rows, connectivity=8)
    expected = float(np.mean(np.diff(graph.indptr) > 0))
    keys = np.sort(rows * lattice.n_columns + columns)
    assert _share_with_a_neighbour(columns, rows, lattice, keys) == pytest.approx(expected)
