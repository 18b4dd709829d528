"""gridsampling:tunedgridclusteringraster in a real (headless) QGIS: rasters in, clusters out."""

from __future__ import annotations

from functools import partial

import numpy as np
import processing
import pytest
from osgeo import gdal
from qgis.core import (
    QgsApplication,
    QgsProcessingOutputNumber,
    QgsProcessingParameterDefinition,
    QgsRasterLayer,
    QgsVectorLayer,
    QgsWkbTypes,
)

from tuned_grid_clustering.test.qgis import helpers
from tuned_grid_clustering.test.qgis.helpers import (
    FAST,
    NODATA,
    VECTOR_ALG,
    Recorder,
    flagged_parameters,
    same_partition,
    table,
    write_raster,
)

ALG = helpers.RASTER_ALG
# The original project's targets with the guaranteed-PSU range, few trials.
PH_SETTINGS = {
    "TARGET_WEIGHT": 240,
    "TARGET_RADIUS": 1000,
    "MIN_WEIGHT": 180,
    "MAX_WEIGHT": 300,
    "INITIAL_TRIALS": 5,
    "SUBSEQUENT_TRIALS": 5,
}
run = partial(helpers.run, ALG)


@pytest.fixture()
def small_raster(tmp_path) -> str:
    """6 x 5 cells of 100 m in UTM 51N: 4 nodata, 1 NaN, 3 zeros, 1 negative, 21 people cells."""
    values = np.arange(1, 31, dtype=np.float32).reshape(5, 6)
    values[0, :4] = NODATA
    values[1, 0] = np.nan
    values[2, 1:4] = 0.0
    values[4, 5] = -7.0
    return write_raster(
        tmp_path / "small.tif", values, (700000.0, 100.0, 0.0, 900500.0, 0.0, -100.0)
    )


# ---------------------------------------------------------------------------
# Definition
# ---------------------------------------------------------------------------


def test_algorithm_is_registered_with_parameters_and_help():
    alg = QgsApplication.processingRegistry().createAlgorithmById(ALG)
    assert alg is not None
    assert alg.displayName() == "Tuned Grid Clustering (population raster)"
    assert (alg.group(), alg.groupId(), alg.provider().id()) == (
        "Clustering",
        "clustering",
        "gridsampling",
    )
    assert alg.canExecute() == (True, "")
    names = [p.name() for p in alg.parameterDefinitions()]
    assert names[:5] == ["INPUT", "BAND", "INCLUDE_ZERO", "PARTITIONS", "PARTITION_FIELD"]
    for name in (
        "TARGET_WEIGHT",
        "TARGET_RADIUS",
        "MIN_WEIGHT",
        "MAX_WEIGHT",
        "MAX_RADIUS",
        "CONTIGUITY",
        "TARGET_RADIUS_FIELD",
        "OUTPUT_GEOMETRY",
        "NEIGHBOUR_DISTANCE",
        "N_JOBS",
        "OUTPUT",
        "OUTPUT_CLUSTERS",
        "OUTPUT_REPORT",
    ):
        assert name in names
    vector = QgsApplication.processingRegistry().createAlgorithmById(VECTOR_ALG)
    shared = [n for n in names if n not in ("INPUT", "BAND", "INCLUDE_ZERO", "PARTITIONS")]
    # The targets and constraints are the same parameters as the vector algorithm's.
    for name in shared:
        if name == "OUTPUT_GEOMETRY":
            continue
        ours, theirs = alg.parameterDefinition(name), vector.parameterDefinition(name)
        assert theirs is not None, name
        assert type(ours) is type(theirs), name
        assert ours.defaultValue() == theirs.defaultValue(), name
    advanced = flagged_parameters(alg, QgsProcessingParameterDefinition.FlagAdvanced)
    assert {"NEIGHBOUR_DISTANCE", "INITIAL_TRIALS", "SEED", "N_JOBS"} <= advanced
    outputs = {o.name(): o for o in alg.outputDefinitions()}
    for name in ("N_CLUSTERS", "BEST_K", "SHARE_IN_RANGE", "SHARE_CONTIGUOUS", "SHARE_OK"):
        assert isinstance(outputs[name], QgsProcessingOutputNumber)
    help_text = alg.shortHelpString()
    for phrase in ("left out", "nodata", "centre point", "polygon", "1102305007/CLUSTER_001"):
        assert phrase in help_text
    for name in names:
        assert name in help_text, f"{name} is not documented"


# ---------------------------------------------------------------------------
# The shared data: the raster clusters like the same cells as points
# ---------------------------------------------------------------------------


def raster_cell_of_points(layer: QgsVectorLayer, raster_path: str) -> list[tuple[int, int]]:
    """(row, col) of the raster cell holding each point of ``layer``."""
    x0, dx, _, y0, _, dy = gdal.Open(raster_path).GetGeoTransform()
    cells = []
    for feature in layer.getFeatures():
        point = feature.geometry().asPoint()
        cells.append((int((point.y() - y0) // dy), int((point.x() - x0) // dx)))
    return cells


def test_ph_raster_clusters_like_the_grid_points(shared_data, ph_points):
    raster = str(shared_data / "ph_population.tif")
    from_raster = run({"INPUT": raster, **PH_SETTINGS, "OUTPUT_GEOMETRY": 1})
    from_points = processing.run(
        VECTOR_ALG,
        {
            "INPUT": ph_points,
            "WEIGHT_FIELD": "population",
            **PH_SETTINGS,
            "OUTPUT": "TEMPORARY_OUTPUT",
            "OUTPUT_CLUSTERS": "TEMPORARY_OUTPUT",
        },
    )
    cells = from_raster["OUTPUT"]
    assert cells.featureCount() == 69226
    assert cells.fields().names() == [
        "row",
        "col",
        "weight",
        "cluster_id",
        "cluster_weight",
        "cluster_radius_m",
        "cluster_pass",
        "cluster_status",
    ]
    assert QgsWkbTypes.geometryType(cells.wkbType()) == QgsWkbTypes.PointGeometry
    by_cell = dict(
        zip(zip(*table(cells, ["row", "col"]).values()), table(cells, ["cluster_id"])["cluster_id"])
    )
    points = from_points["OUTPUT"]
    point_cells = raster_cell_of_points(points, raster)
    assert set(point_cells) == set(by_cell)
    ours = [by_cell[cell] for cell in point_cells]
    theirs = table(points, ["cluster_id"])["cluster_id"]
    assert same_partition(ours, theirs)
    assert from_raster["N_CLUSTERS"] == from_points["N_CLUSTERS"]
    assert from_raster["BEST_K"] == from_points["BEST_K"]
    for name in ("SHARE_IN_RANGE", "SHARE_CONTIGUOUS", "SHARE_WITHIN_RADIUS", "SHARE_OK"):
        assert from_raster[name] == from_points[name]

    clusters = from_raster["OUTPUT_CLUSTERS"]
    assert clusters.featureCount() == from_raster["N_CLUSTERS"]
    rows = table(clusters, ["cluster_id", "weight", "n_units", "area_km2", "status"])
    assert sum(rows["n_units"]) == 69226
    assert sum(rows["weight"]) == pytest.approx(17206.68, rel=1e-5)
    # Cells of 3 arc-seconds (~92 m): 69,226 cells cover about 585 km².
    assert sum(rows["area_km2"]) == pytest.approx(585, rel=0.02)
    assert all(f.geometry().isGeosValid() for f in clusters.getFeatures())


def test_gdal_and_qgis_provider_read_the_same_cells(shared_data, small_raster):
    from tuned_grid_clustering.algorithms.raster_input import read_populated_cells

    for path in (str(shared_data / "ph_population.tif"), small_raster):
        layer = QgsRasterLayer(path, "raster")
        by_gdal = read_populated_cells(layer, 1, use_gdal=True, block_cells=1000)
        by_qgis = read_populated_cells(layer, 1, use_gdal=False, block_cells=1000)
        assert (by_gdal.reader, by_qgis.reader) == ("GDAL", "QGIS provider")
        assert np.array_equal(by_gdal.rows, by_qgis.rows)
        assert np.array_equal(by_gdal.cols, by_qgis.cols)
        assert np.array_equal(by_gdal.values, by_qgis.values)
        assert by_gdal.n_nodata == by_qgis.n_nodata
        whole = read_populated_cells(layer, 1, block_cells=10**9)
        assert np.array_equal(whole.rows, by_gdal.rows)


# ---------------------------------------------------------------------------
# Small rasters
# ---------------------------------------------------------------------------


def test_nodata_zero_and_negative_cells_are_left_out(small_raster):
    feedback = Recorder()
    results = run(
        {"INPUT": small_raster, "TARGET_WEIGHT": 100, "TARGET_RADIUS": 200, **FAST}, feedback
    )
    cells = table(results["OUTPUT"], ["row", "col", "weight", "cluster_id"])
    assert len(cells["row"]) == 30 - 4 - 1 - 3 - 1
    assert min(cells["weight"]) > 0
    assert (0, 4) in set(zip(cells["row"], cells["col"]))
    assert (1, 0) not in set(zip(cells["row"], cells["col"]))  # NaN
    assert any("5 nodata cells were left out" in m for m in feedback.infos)
    assert any("3 cells of value 0 were left out" in m for m in feedback.infos)
    assert any("1 cells with a negative value (sum -7.0)" in m for m in feedback.infos)
    with_zero = run(
        {
            "INPUT": small_raster,
            "INCLUDE_ZERO": True,
            "TARGET_WEIGHT": 100,
            "TARGET_RADIUS": 200,
            **FAST,
        }
    )
    kept = table(with_zero["OUTPUT"], ["weight"])["weight"]
    assert len(kept) == 24 and kept.count(0.0) == 3


def test_output_geometry_cell_polygons_or_centre_points(small_raster):
    common = {"INPUT": small_raster, "TARGET_WEIGHT": 100, "TARGET_RADIUS": 200, **FAST}
    polygons = run(common)
    points = run({**common, "OUTPUT_GEOMETRY": 1})
    assert QgsWkbTypes.geometryType(polygons["OUTPUT"].wkbType()) == QgsWkbTypes.PolygonGeometry
    assert QgsWkbTypes.geometryType(points["OUTPUT"].wkbType()) == QgsWkbTypes.PointGeometry
    assert polygons["OUTPUT"].crs().authid() == "EPSG:32651"
    for cell, centre in zip(polygons["OUTPUT"].getFeatures(), points["OUTPUT"].getFeatures()):
        assert (cell["row"], cell["col"]) == (centre["row"], centre["col"])
        assert cell.geometry().area() == pytest.approx(100.0 * 100.0)
        point = centre.geometry().asPoint()
        assert (point.x(), point.y()) == (
            700050.0 + 100 * cell["col"],
            900450.0 - 100 * cell["row"],
        )
        assert cell.geometry().contains(centre.geometry())
    # Cluster polygons are the union of their cells: 1 ha each.
    for cluster in polygons["OUTPUT_CLUSTERS"].getFeatures():
        assert cluster.geometry().area() == pytest.approx(cluster["n_units"] * 1e4)


def test_projected_raster_is_clustered_in_its_own_metres(demo_data, tmp_path):
    projected = str(tmp_path / "demo_utm.tif")
    warped = gdal.Warp(
        projected,
        str(demo_data / "demo_population.tif"),
        dstSRS="EPSG:32651",
        xRes=100.0,
        yRes=100.0,
        resampleAlg="near",
        srcNodata=NODATA,
        dstNodata=NODATA,
    )
    values = warped.GetRasterBand(1).ReadAsArray()
    warped = None  # flush and close
    populated = values[(values != NODATA) & (values > 0)]
    feedback = Recorder()
    results = run(
        {
            "INPUT": projected,
            "TARGET_WEIGHT": 240,
            "TARGET_RADIUS": 1000,
            "MAX_WEIGHT": 300,
            **FAST,
        },
        feedback,
    )
    assert not any("UTM zone of the data centre" in m for m in feedback.infos)  # already metric
    assert results["OUTPUT"].featureCount() == populated.size
    assert results["OUTPUT"].crs().authid() == "EPSG:32651"
    clusters = table(results["OUTPUT_CLUSTERS"], ["weight", "n_units", "area_km2", "radius_m"])
    assert sum(clusters["weight"]) == pytest.approx(float(populated.sum()), rel=1e-6)
    for n_units, area in zip(clusters["n_units"], clusters["area_km2"]):
        assert area == pytest.approx(n_units * 0.01, rel=0.01)  # 1 ha cells
    assert max(clusters["radius_m"]) < 10000


# ---------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------


def expect_error(parameters: dict, *phrases: str) -> str:
    return helpers.expect_error(
        ALG, {"TARGET_WEIGHT": 100, "TARGET_RADIUS": 200, **FAST, **parameters}, *phrases
    )


def test_error_band_out_of_range(small_raster):
    expect_error({"INPUT": small_raster, "BAND": 3}, "Band 3 does not exist", "1 band", "BAND")


def test_error_raster_without_populated_cells(tmp_path):
    empty = write_raster(
        tmp_path / "empty.tif", np.full((4, 4), NODATA, np.float32), (0, 100, 0, 400, 0, -100)
    )
    expect_error({"INPUT": empty}, "no populated cell", "16 nodata cells", "nodata value")
    zeros = write_raster(
        tmp_path / "zeros.tif", np.zeros((4, 4), np.float32), (0, 100, 0, 400, 0, -100)
    )
    expect_error({"INPUT": zeros}, "no populated cell", "16 cells of value 0", "INCLUDE_ZERO")


def test_error_rotated_raster(tmp_path):
    rotated = write_raster(
        tmp_path / "rotated.tif", np.ones((4, 4), np.float32), (700000, 100, 20, 900400, 20, -100)
    )
    expect_error({"INPUT": rotated}, "rotated", "Warp")


def test_error_bad_targets_are_refused_before_running(small_raster):
    expect_error({"INPUT": small_raster, "MIN_WEIGHT": 150}, "minimum cluster weight", "MIN_WEIGHT")
    expect_error({"INPUT": small_raster, "MAX_RADIUS": 100}, "maximum cluster radius", "MAX_RADIUS")


# ---------------------------------------------------------------------------
# qgis_process
# ---------------------------------------------------------------------------


def test_qgis_process_runs_the_raster_algorithm(qgis_process_env, demo_data, tmp_path):
    output, clusters = tmp_path / "cells.gpkg", tmp_path / "clusters.gpkg"
    parameters = {
        "INPUT": demo_data / "demo_population.tif",
        "PARTITIONS": f"{demo_data / 'demo_admin.gpkg'}|layername=admin",
        "PARTITION_FIELD": "admin",
        "TARGET_RADIUS_FIELD": "target_radius",
        "TARGET_WEIGHT": 240,
        "MIN_WEIGHT": 180,
        "MAX_WEIGHT": 300,
        **FAST,
        "N_JOBS": 2,
        "OUTPUT": output,
        "OUTPUT_CLUSTERS": clusters,
    }
    results = helpers.qgis_process_run(qgis_process_env, ALG, parameters)["results"]
    cells = QgsVectorLayer(str(output), "cells", "ogr")
    assert cells.featureCount() == 8000
    assert QgsVectorLayer(str(clusters), "clusters", "ogr").featureCount() == results["N_CLUSTERS"]
    assert all("/CLUSTER_" in f["cluster_id"] for f in cells.getFeatures())
    assert 0 <= results["SHARE_OK"] <= 1


def test_both_outputs_in_one_geopackage(small_raster, tmp_path):
    """OUTPUT is closed in the background; OUTPUT_CLUSTERS into the same file waits for it."""
    path = tmp_path / "both.gpkg"
    results = run(
        {
            "INPUT": small_raster,
            "TARGET_WEIGHT": 100,
            "TARGET_RADIUS": 200,
            **FAST,
            "OUTPUT": f"ogr:dbname='{path}' table=\"cells\" (geom)",
            "OUTPUT_CLUSTERS": f"ogr:dbname='{path}' table=\"clusters\" (geom)",
        }
    )
    cells = QgsVectorLayer(f"{path}|layername=cells", "cells", "ogr")
    clusters = QgsVectorLayer(f"{path}|layername=clusters", "clusters", "ogr")
    assert cells.isValid() and clusters.isValid()
    assert cells.featureCount() == 21
    assert clusters.featureCount() == results["N_CLUSTERS"]
    assert sum(table(clusters, ["n_units"])["n_units"]) == 21


def test_output_files_are_told_apart():
    from tuned_grid_clustering.algorithms.common import _destination_file

    assert _destination_file("memory:cells") is None
    assert _destination_file("/tmp/a.gpkg") == _destination_file("/tmp/a.gpkg|layername=x")
    assert _destination_file("ogr:dbname='/tmp/a.gpkg' table=\"c\" (geom)") == _destination_file(
        "/tmp/a.gpkg"
    )
    assert _destination_file("C:/data/a.gpkg") not in (None, False)
    assert _destination_file("postgis:dbname='db' table=\"c\"") is False
    assert _destination_file("") is False


def test_cancelling_while_writing_stops_cleanly(small_raster, tmp_path):
    """Cancelled between clustering and writing: the writer thread stops; 'Cancelled'."""
    from qgis.core import QgsProcessingException, QgsProcessingFeedback

    class CancelAtWriting(QgsProcessingFeedback):
        def setProgress(self, progress):  # noqa: N802 (QGIS API)
            super().setProgress(progress)
            if progress >= 85:
                self.cancel()

    feedback = CancelAtWriting()
    with pytest.raises(QgsProcessingException, match="Cancelled"):
        helpers.run(
            ALG,
            {
                "INPUT": small_raster,
                "TARGET_WEIGHT": 100,
                "TARGET_RADIUS": 200,
                **FAST,
                "OUTPUT": str(tmp_path / "cells.gpkg"),
            },
            feedback=feedback,
        )
