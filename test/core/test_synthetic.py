"""The synthetic population grid and the demo data writer."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tuned_grid_clustering.core import synthetic
from tuned_grid_clustering.core.errors import ClusteringInputError
from tuned_grid_clustering.core.synthetic import synthetic_population_grid

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def demo():
    return synthetic_population_grid()


def test_same_seed_same_grid_other_seed_other_grid(demo):
    again = synthetic_population_grid()
    for name in ("lon", "lat", "population", "row", "col", "urban", "admin"):
        np.testing.assert_array_equal(getattr(demo, name), getattr(again, name))
    other = synthetic_population_grid(seed=1)
    assert not np.array_equal(demo.population, other.population[: len(demo)])


def test_demo_defaults_are_plausible(demo):
    assert 6000 <= len(demo) <= 10_000
    assert 3000 <= demo.total_population <= 6000
    assert 10 <= demo.total_population / 240 <= 30  # clusters at the demo target weight
    assert np.all(demo.population > 0) and np.all(np.isfinite(demo.population))
    assert demo.lat.min() > -23.5 and demo.lat.max() < 23.5  # in the tropics
    assert demo.lon.min() > 120.5 and demo.lon.max() < 121.5
    # Row-major order, each cell once.
    key = demo.row.astype(np.int64) * demo.n_cols + demo.col
    assert np.all(np.diff(key) > 0)
    assert demo.row.min() >= 0 and demo.row.max() < demo.n_rows
    assert demo.col.min() >= 0 and demo.col.max() < demo.n_cols
    # Coordinates are cell centres of the grid described by the geotransform.
    x0, size, _, y0, _, minus_size = demo.geotransform
    np.testing.assert_allclose(demo.lon, x0 + (demo.col + 0.5) * size)
    np.testing.assert_allclose(demo.lat, y0 + (demo.row + 0.5) * minus_size)


@pytest.mark.parametrize("n", [1, 37, 500, 12_345])
def test_size_matches_the_request(n):
    grid = synthetic_population_grid(n, seed=5)
    assert len(grid) == n
    assert grid.total_population == pytest.approx(0.55 * n)


def test_banded_generation_stays_near_the_request(monkeypatch):
    # Small bands and subsample exercise the big-grid path on a small grid.
    monkeypatch.setattr(synthetic, "BAND_CELLS", 4000)
    monkeypatch.setattr(synthetic, "SUBSAMPLE_CELLS", 5000)
    grid = synthetic_population_grid(30_000, seed=3)
    assert abs(len(grid) / 30_000 - 1) < 0.02
    key = grid.row.astype(np.int64) * grid.n_cols + grid.col
    assert np.all(np.diff(key) > 0)
    assert not grid.in_river(grid.row, grid.col).any()


def test_river_leaves_a_gap_that_splits_the_area(demo):
    assert demo.river_centre_rows.shape == (1, demo.n_cols)
    assert not demo.in_river(demo.row, demo.col).any()
    # The band crosses the whole grid, and there are people on both banks.
    centre = demo.river_centre_rows[0]
    assert np.all(centre - demo.river_half_width >= 0)
    assert np.all(centre + demo.river_half_width < demo.n_rows - 1)
    north = demo.row < centre[demo.col]
    assert north.sum() > 0.1 * len(demo) and (~north).sum() > 0.1 * len(demo)
    # Without the river, cells do appear in that band.
    dry = synthetic_population_grid(river=False)
    assert demo.in_river(dry.row, dry.col).sum() > 50
    assert dry.river_centre_rows.shape == (0, dry.n_cols)


def test_towns_are_denser_than_the_countryside(demo):
    urban, rural = demo.urban, ~demo.urban
    assert 0.02 < urban.mean() < 0.5
    assert demo.population[urban].mean() > 5 * demo.population[rural].mean()
    # Occupancy of the 5 x 5 neighbourhood: towns are nearly full, rural cells sparse.
    occupied = np.zeros((demo.n_rows + 4, demo.n_cols + 4), dtype=np.int32)
    occupied[demo.row + 2, demo.col + 2] = 1
    window = sum(
        occupied[2 + dr : 2 + dr + demo.n_rows, 2 + dc : 2 + dc + demo.n_cols]
        for dr in range(-2, 3)
        for dc in range(-2, 3)
    )
    share = window[demo.row, demo.col] / 25
    assert share[urban].mean() > share[rural].mean() + 0.2


def test_admin_partition(demo):
    codes, counts = np.unique(demo.admin, return_counts=True)
    assert codes.min() >= 1
    assert 6 <= codes.size <= 30
    np.testing.assert_array_equal(demo.admin_of(demo.row, demo.col), demo.admin)
    assert demo.admin_label(7) == "SYN-0007"
    big = synthetic_population_grid(40_000, admin_cells=4000, seed=1)
    sizes = np.unique(big.admin, return_counts=True)[1]
    assert 4 <= sizes.size <= 25
    assert 1500 < np.median(sizes) < 8000


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"n_cells_target": 0}, "n_cells_target"),
        ({"n_cells_target": 2.5}, "n_cells_target"),
        ({"cell_size_deg": 0.0}, "cell_size_deg"),
        ({"mean_population": -1.0}, "mean_population"),
        ({"origin_lat": -89.99}, "latitudes"),
        ({"origin_lon": 179.99}, "longitudes"),
    ],
)
def test_bad_arguments_name_the_problem(kwargs, words):
    with pytest.raises(ClusteringInputError, match=words):
        synthetic_population_grid(**kwargs)


# ---------------------------------------------------------------------------
# tools/make_demo_data.py (needs only GDAL's Python bindings)
# ---------------------------------------------------------------------------


def _load_tool():
    spec = importlib.util.spec_from_file_location(
        "make_demo_data", REPO / "tools" / "make_demo_data.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _read_layer(path: Path, layer_name: str) -> list[dict]:
    from osgeo import ogr

    source = ogr.Open(str(path))
    layer = source.GetLayerByName(layer_name)
    assert layer is not None, f"{path} has no layer {layer_name}"
    assert layer.GetSpatialRef().GetAuthorityCode(None) == "4326"
    rows = []
    for feature in layer:
        row = {key: feature.GetField(key) for key in feature.keys()}  # noqa: SIM118 (OGR feature)
        row["_geometry"] = feature.GetGeometryRef().ExportToWkt()
        rows.append(row)
    return rows


def test_make_demo_data_writes_the_four_files(tmp_path):
    pytest.importorskip("osgeo")
    from osgeo import gdal

    tool = _load_tool()
    paths = tool.make_demo_data(tmp_path / "a", cells=1500, seed=3)
    grid = synthetic_population_grid(1500, seed=3)
    assert sorted(paths) == ["admin", "cells", "points", "raster"]

    points = _read_layer(paths["points"], "grid_points")
    cells = _read_layer(paths["cells"], "grid_cells")
    assert len(points) == len(cells) == 1500
    assert {"grid_id", "population", "urban", "admin"} <= set(points[0])
    assert [p["grid_id"] for p in points] == list(range(1, 1501))
    np.testing.assert_allclose([p["population"] for p in points], grid.population)
    assert [p["urban"] for p in cells] == grid.urban.astype(int).tolist()
    assert points[0]["_geometry"].startswith("POINT")
    assert cells[0]["_geometry"].startswith("POLYGON")

    raster = gdal.Open(str(paths["raster"]))
    band = raster.GetRasterBand(1)
    values = band.ReadAsArray()
    assert band.GetNoDataValue() == -99999 and values.dtype == np.float32
    assert (values != -99999).sum() == 1500
    assert values[values != -99999].sum() == pytest.approx(grid.total_population, rel=1e-5)
    assert raster.GetGeoTransform() == pytest.approx(grid.geotransform)

    admin = _read_layer(paths["admin"], "admin")
    labels = {p["admin"] for p in points}
    assert labels <= {a["admin"] for a in admin}
    for area in admin:
        assert area["target_radius"] == (1000.0 if area["urban"] else 2000.0)

    # Same seed, same content.
    again = tool.make_demo_data(tmp_path / "b", cells=1500, seed=3)
    assert _read_layer(again["points"], "grid_points") == points
    assert _read_layer(again["admin"], "admin") == admin


def test_make_demo_data_command_line(tmp_path):
    pytest.importorskip("osgeo")
    completed = subprocess.run(
        [
            sys.executable,
            str(REPO / "tools" / "make_demo_data.py"),
            str(tmp_path),
            "--cells",
            "300",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    assert "300 populated cells" in completed.stdout
    for name in ("demo_grid_points.gpkg", "demo_grid_cells.gpkg", "demo_population.tif"):
        assert (tmp_path / name).is_file()
    assert (tmp_path / "demo_admin.gpkg").is_file()
