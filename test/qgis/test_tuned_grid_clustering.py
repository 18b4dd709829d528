"""gridsampling:tunedgridclustering in a real (headless) QGIS, through processing.run."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import processing
import pytest
from qgis.core import (
    QgsApplication,
    QgsCategorizedSymbolRenderer,
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsCoordinateTransformContext,
    QgsFeatureRequest,
    QgsProcessingFeatureSourceDefinition,
    QgsProcessingFeedback,
    QgsProcessingModelAlgorithm,
    QgsProcessingOutputHtml,
    QgsProcessingOutputNumber,
    QgsProcessingParameterDefinition,
    QgsProject,
    QgsVectorLayer,
    QgsWkbTypes,
)
from qgis.PyQt.QtCore import QVariant

from tuned_grid_clustering.test.qgis import helpers
from tuned_grid_clustering.test.qgis.helpers import (
    FAST,
    UTM_51N,
    VECTOR_ALG,
    flagged_parameters,
    l_shaped_cells,
    same_partition,
)
from tuned_grid_clustering.test.qgis.helpers import table as attribute_table

ALG = VECTOR_ALG
DATA = Path(__file__).resolve().parent / "data"
# The original project's settings on the shared data (fewer trials than the default).
PH_SETTINGS = {
    "WEIGHT_FIELD": "population",
    "TARGET_WEIGHT": 240,
    "TARGET_RADIUS": 1000,
    "MAX_WEIGHT": 300,
    "MAX_PASSES": 10,
    "INITIAL_TRIALS": 20,
    "SUBSEQUENT_TRIALS": 10,
}
# Small synthetic grid: 20 x 20 points, 100 m apart, weights 1..9 (total ~2000).
SMALL = {"WEIGHT_FIELD": "pop", "TARGET_WEIGHT": 200, "TARGET_RADIUS": 300, **FAST}


def run(parameters: dict) -> dict:
    """processing.run of the vector algorithm with memory outputs unless given."""
    return helpers.run(ALG, parameters)


@pytest.fixture()
def grid_layer(make_layer, make_grid_rows):
    fields = [("id", QVariant.Int), ("pop", QVariant.Double)]
    return make_layer("Point", UTM_51N, fields, make_grid_rows(20, 20, 100.0))


# ---------------------------------------------------------------------------
# Registration and definition
# ---------------------------------------------------------------------------


def test_algorithm_is_registered_with_its_public_names():
    alg = QgsApplication.processingRegistry().algorithmById(ALG)
    assert alg is not None
    assert alg.name() == "tunedgridclustering"
    assert alg.displayName() == "Tuned Grid Clustering"
    assert (alg.group(), alg.groupId()) == ("Clustering", "clustering")
    assert alg.provider().id() == "gridsampling"
    assert alg.provider().name() == "Grid sampling"
    assert not alg.icon().isNull()
    assert alg.canExecute() == (True, "")


def test_parameters_outputs_and_help():
    alg = QgsApplication.processingRegistry().createAlgorithmById(ALG)
    names = [p.name() for p in alg.parameterDefinitions()]
    assert names == [
        "INPUT",
        "WEIGHT_FIELD",
        "PARTITION_FIELD",
        "TARGET_WEIGHT",
        "TARGET_RADIUS",
        "WEIGHT_IMPORTANCE",
        "MIN_WEIGHT",
        "MAX_WEIGHT",
        "MAX_RADIUS",
        "CONTIGUITY",
        "MAX_PASSES",
        "TARGET_WEIGHT_FIELD",
        "MIN_WEIGHT_FIELD",
        "MAX_WEIGHT_FIELD",
        "TARGET_RADIUS_FIELD",
        "NEIGHBOUR_DISTANCE",
        "BRIDGE_DISTANCE",
        "INITIAL_TRIALS",
        "SUBSEQUENT_TRIALS",
        "DISTANCE_CRS",
        "SEED",
        "N_JOBS",
        "OUTPUT",
        "OUTPUT_CLUSTERS",
        "OUTPUT_REPORT",
    ]
    advanced = flagged_parameters(alg, QgsProcessingParameterDefinition.FlagAdvanced)
    assert {
        "NEIGHBOUR_DISTANCE",
        "INITIAL_TRIALS",
        "SUBSEQUENT_TRIALS",
        "DISTANCE_CRS",
        "SEED",
        "N_JOBS",
    } <= advanced
    assert not {"TARGET_WEIGHT", "MIN_WEIGHT", "MAX_RADIUS", "CONTIGUITY"} & advanced
    optional = flagged_parameters(alg, QgsProcessingParameterDefinition.FlagOptional)
    assert {
        "WEIGHT_FIELD",
        "PARTITION_FIELD",
        "MIN_WEIGHT",
        "MAX_WEIGHT",
        "MAX_RADIUS",
        "TARGET_RADIUS_FIELD",
        "NEIGHBOUR_DISTANCE",
        "DISTANCE_CRS",
        "OUTPUT_REPORT",
    } <= optional
    assert alg.parameterDefinition("CONTIGUITY").defaultValue() is True
    outputs = {o.name(): o for o in alg.outputDefinitions()}
    assert isinstance(outputs["OUTPUT_REPORT"], QgsProcessingOutputHtml)
    assert isinstance(outputs["N_CLUSTERS"], QgsProcessingOutputNumber)
    assert isinstance(outputs["BEST_K"], QgsProcessingOutputNumber)
    for name in ("SHARE_IN_RANGE", "SHARE_CONTIGUOUS", "SHARE_WITHIN_RADIUS", "SHARE_OK"):
        assert isinstance(outputs[name], QgsProcessingOutputNumber)
    help_text = alg.shortHelpString()
    for phrase in (
        "point on surface",
        "convex hull",
        "grid cells",
        "dissolve",
        "UTM",
        "_input",
        "cluster_status",
        "single_unit_over_max",
        "island_under_min",
        "failed",
        "1102305007/CLUSTER_001",
    ):
        assert phrase in help_text
    for name in names:
        assert name in help_text, f"{name} is not documented"


# ---------------------------------------------------------------------------
# Shared data: same clustering as core, nothing lost
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ph_core_result(ph_points):
    """core's TunedClustering on the ph points projected to UTM 51N by QGIS."""
    from tuned_grid_clustering.core import TunedClustering

    layer = QgsVectorLayer(ph_points, "points", "ogr")
    transform = QgsCoordinateTransform(
        layer.crs(), QgsCoordinateReferenceSystem(UTM_51N), QgsCoordinateTransformContext()
    )
    grid_ids, xy, weights = [], [], []
    for feature in layer.getFeatures():
        point = transform.transform(feature.geometry().asPoint())
        grid_ids.append(feature["grid_id"])
        xy.append((point.x(), point.y()))
        weights.append(feature["population"])
    estimator = TunedClustering(
        240,
        1000,
        max_cluster_weight=300,
        max_passes=10,
        initial_max_trials=PH_SETTINGS["INITIAL_TRIALS"],
        subsequent_max_trials=PH_SETTINGS["SUBSEQUENT_TRIALS"],
        random_state=42,
    )
    result = estimator.fit(np.array(xy), np.array(weights))
    return dict(zip(grid_ids, result.cluster_ids)), result


@pytest.mark.parametrize("layer_fixture", ["ph_points", "ph_cells"])
def test_shared_data_gives_core_clustering(layer_fixture, request, ph_core_result):
    uri = request.getfixturevalue(layer_fixture)
    core_by_grid_id, core_result = ph_core_result
    source = QgsVectorLayer(uri, "input", "ogr")
    results = run({"INPUT": uri, **PH_SETTINGS})
    units, clusters = results["OUTPUT"], results["OUTPUT_CLUSTERS"]

    # Every feature, with all its attributes, plus the cluster fields.
    assert units.featureCount() == source.featureCount() == 69226
    input_names = source.fields().names()
    assert units.fields().names() == input_names + [
        "cluster_id",
        "cluster_weight",
        "cluster_radius_m",
        "cluster_pass",
        "cluster_status",
    ]
    assert QgsWkbTypes.geometryType(units.wkbType()) == QgsWkbTypes.geometryType(source.wkbType())
    by_grid_id = {f["grid_id"]: f.attributes() for f in source.getFeatures()}
    table = attribute_table(units, ["grid_id", "cluster_id", "population", "PSGC", "urban"])
    assert len(set(table["grid_id"])) == 69226
    for i in range(0, 69226, 997):
        original = by_grid_id[table["grid_id"][i]]
        assert [table["population"][i], table["PSGC"][i], table["urban"][i]] == [
            original[source.fields().indexOf(name)] for name in ("population", "PSGC", "urban")
        ]

    # Same partition of the units as core on the same coordinates.
    ours = table["cluster_id"]
    theirs = [core_by_grid_id[g] for g in table["grid_id"]]
    assert same_partition(ours, theirs)
    assert results["N_CLUSTERS"] == core_result.n_clusters == len(set(ours))
    assert results["BEST_K"] == core_result.best_k

    # One polygon per cluster, weights summing to the total.
    assert clusters.featureCount() == results["N_CLUSTERS"]
    assert clusters.fields().names() == [
        "cluster_id",
        "weight",
        "radius_m",
        "n_units",
        "area_km2",
        "pass",
        "status",
    ]
    rows = attribute_table(clusters, ["cluster_id", "weight", "n_units", "area_km2", "pass"])
    assert sorted(rows["cluster_id"]) == sorted(set(ours))
    # Hierarchical ids: CLUSTER_001 from pass 1, CLUSTER_001_01 from pass 2, ...; a
    # cluster the guaranteed-PSU refinement changed may keep its parent's id, with the
    # refinement's pass (one after the last tuned pass).
    assert all(cid.count("_") <= p for cid, p in zip(rows["cluster_id"], rows["pass"]))
    assert max(rows["pass"]) >= 2
    assert sum(rows["weight"]) == pytest.approx(17206.6785, rel=1e-6)
    assert sum(rows["n_units"]) == 69226
    for feature in clusters.getFeatures():
        geometry = feature.geometry()
        assert geometry.type() == QgsWkbTypes.PolygonGeometry
        assert geometry.isGeosValid()
    # Cells of 3 arc-seconds (~92 m) -> 69,226 cells cover about 585 km².
    assert sum(rows["area_km2"]) == pytest.approx(585, rel=0.02)


# ---------------------------------------------------------------------------
# Small synthetic layers
# ---------------------------------------------------------------------------


def test_grid_points_clusters_are_unions_of_cells(grid_layer):
    results = run({"INPUT": grid_layer, **SMALL})
    units, clusters = results["OUTPUT"], results["OUTPUT_CLUSTERS"]
    assert units.featureCount() == 400
    n_units = attribute_table(clusters, ["n_units"])["n_units"]
    for feature in clusters.getFeatures():
        # 100 m cells: area = n_units hectares; clusters do not overlap.
        assert feature.geometry().area() == pytest.approx(feature["n_units"] * 1e4, rel=1e-9)
    assert sum(n_units) == 400
    weights = attribute_table(units, ["pop", "cluster_id", "cluster_weight"])
    per_cluster: dict[str, float] = {}
    for pop, cid in zip(weights["pop"], weights["cluster_id"]):
        per_cluster[cid] = per_cluster.get(cid, 0.0) + pop
    for cid, weight in zip(weights["cluster_id"], weights["cluster_weight"]):
        assert weight == pytest.approx(per_cluster[cid])


def test_scattered_points_get_convex_hulls(make_layer):
    rng = np.random.default_rng(3)
    rows = [
        (f"Point ({700000 + x} {900000 + y})", [i, 1.0])
        for i, (x, y) in enumerate(rng.uniform(0, 2000, size=(150, 2)))
    ]
    # Two coincident points far away: their cluster's hull is degenerate.
    rows += [("Point (720000 920000)", [150, 1.0]), ("Point (720000 920000)", [151, 1.0])]
    layer = make_layer("Point", UTM_51N, [("id", QVariant.Int), ("pop", QVariant.Double)], rows)
    results = run({"INPUT": layer, "TARGET_WEIGHT": 25, "TARGET_RADIUS": 400, **FAST})
    assert results["OUTPUT"].featureCount() == 152
    clusters = results["OUTPUT_CLUSTERS"]
    for feature in clusters.getFeatures():
        assert feature.geometry().type() == QgsWkbTypes.PolygonGeometry
        assert feature.geometry().area() > 0
    units = attribute_table(results["OUTPUT"], ["id", "cluster_id"])
    far = {cid for i, cid in zip(units["id"], units["cluster_id"]) if i >= 150}
    assert len(far) == 1  # the two far points form a cluster of their own
    (far_cluster,) = [f for f in clusters.getFeatures() if f["cluster_id"] in far]
    assert far_cluster["n_units"] == 2
    assert 0 < far_cluster.geometry().area() < 10  # a point buffered by 1 m


def test_polygons_are_dissolved_and_invalid_ones_kept(make_layer):
    # L-shaped (non-rectangular) polygons: the generic dissolve path.
    rows = [(wkt, [index, 1.0]) for index, (_, _, wkt) in enumerate(l_shaped_cells())]
    # A self-intersecting "bow tie": invalid but usable.
    rows.append(
        (
            "Polygon ((701300 900000, 701400 900100, 701400 900000, 701300 900100, 701300 900000))",
            [len(rows), 1.0],
        )
    )
    layer = make_layer("Polygon", UTM_51N, [("id", QVariant.Int), ("pop", QVariant.Double)], rows)
    results = run({"INPUT": layer, "TARGET_WEIGHT": 20, "TARGET_RADIUS": 300, **FAST})
    assert results["OUTPUT"].featureCount() == 145
    clusters = results["OUTPUT_CLUSTERS"]
    total_area = sum(f.geometry().area() for f in clusters.getFeatures())
    assert total_area == pytest.approx(144 * 7500, rel=0.01)
    assert sum(attribute_table(clusters, ["n_units"])["n_units"]) == 145


def test_selected_features_only(grid_layer):
    grid_layer.selectByExpression('"id" < 100')
    source = QgsProcessingFeatureSourceDefinition(grid_layer.id(), True)
    QgsProject.instance().addMapLayer(grid_layer, False)
    try:
        results = run({"INPUT": source, **SMALL, "TARGET_WEIGHT": 50})
    finally:
        QgsProject.instance().takeMapLayer(grid_layer)
    ids = attribute_table(results["OUTPUT"], ["id"])["id"]
    assert sorted(ids) == list(range(100))


def test_field_name_clash_keeps_input_values(make_layer, make_grid_rows):
    fields = [("id", QVariant.Int), ("pop", QVariant.Double), ("Cluster_ID", QVariant.String)]
    rows = [(wkt, values + ["old"]) for wkt, values in make_grid_rows(10, 10, 100.0)]
    layer = make_layer("Point", UTM_51N, fields, rows)
    units = run({"INPUT": layer, **SMALL, "TARGET_WEIGHT": 100})["OUTPUT"]
    names = units.fields().names()
    assert names == [
        "id",
        "pop",
        "Cluster_ID_input",
        "cluster_id",
        "cluster_weight",
        "cluster_radius_m",
        "cluster_pass",
        "cluster_status",
    ]
    table = attribute_table(units, ["Cluster_ID_input", "cluster_id"])
    assert set(table["Cluster_ID_input"]) == {"old"}
    assert all(cid.startswith("CLUSTER_") for cid in table["cluster_id"])


def test_no_weight_field_counts_features(grid_layer):
    results = run({"INPUT": grid_layer, "TARGET_WEIGHT": 40, "TARGET_RADIUS": 300, **FAST})
    weights = attribute_table(results["OUTPUT_CLUSTERS"], ["weight", "n_units"])
    assert weights["weight"] == [float(n) for n in weights["n_units"]]
    assert sum(weights["weight"]) == 400


def test_max_weight_splits_in_extra_passes(make_layer, make_grid_rows):
    # Points jittered off the grid (kept in layer order), and the passes alone:
    # no guaranteed-PSU refinement afterwards.
    rng = np.random.default_rng(5)
    rows = []
    for wkt, values in make_grid_rows(20, 20, 100.0):
        x, y = (float(v) for v in wkt[len("Point (") : -1].split())
        dx, dy = rng.uniform(-30, 30, 2)
        rows.append((f"Point ({x + dx} {y + dy})", values))
    layer = make_layer("Point", UTM_51N, [("id", QVariant.Int), ("pop", QVariant.Double)], rows)
    common = {"INPUT": layer, **SMALL, "CONTIGUITY": False}
    single = run(common)
    heavy = [w for w in attribute_table(single["OUTPUT_CLUSTERS"], ["weight"])["weight"] if w > 220]
    assert heavy, "the test needs a cluster above the maximum in pass 1"
    split = run({**common, "MAX_WEIGHT": 220, "MAX_PASSES": 4})
    table = attribute_table(split["OUTPUT_CLUSTERS"], ["cluster_id", "weight", "pass"])
    assert max(table["pass"]) > 1
    assert any(cid.count("_") == 2 for cid in table["cluster_id"])  # CLUSTER_001_01
    assert split["N_CLUSTERS"] > single["N_CLUSTERS"]
    assert split["OUTPUT"].featureCount() == 400
    unit_pass = attribute_table(split["OUTPUT"], ["cluster_pass"])["cluster_pass"]
    assert max(unit_pass) == max(table["pass"])


def test_same_seed_same_clusters_whatever_threads(grid_layer):
    first = attribute_table(run({"INPUT": grid_layer, **SMALL})["OUTPUT"], ["cluster_id"])
    again = attribute_table(
        run({"INPUT": grid_layer, **SMALL, "N_JOBS": 2})["OUTPUT"], ["cluster_id"]
    )
    assert first == again


def test_geographic_layer_uses_utm_zone_and_distance_crs_override(make_layer):
    rows = [
        (f"Point ({125.5 + 0.001 * i} {7.9 + 0.001 * j})", [i * 10 + j, 1.0])
        for i in range(10)
        for j in range(10)
    ]
    layer = make_layer("Point", "EPSG:4326", [("id", QVariant.Int), ("pop", QVariant.Double)], rows)
    from tuned_grid_clustering.algorithms.common import read_units
    from tuned_grid_clustering.algorithms.metric_crs import choose_metric_crs

    units = read_units(layer, None, QgsProcessingFeedback())
    context = QgsCoordinateTransformContext()
    assert choose_metric_crs(units.crs, units.xy, None, context).authid() == UTM_51N
    requested = QgsCoordinateReferenceSystem("EPSG:3123")  # PRS92 / Philippines zone 5
    assert choose_metric_crs(units.crs, units.xy, requested, context).authid() == "EPSG:3123"
    radius_utm = run({"INPUT": layer, "TARGET_WEIGHT": 100, "TARGET_RADIUS": 5000, **FAST})
    (cluster,) = list(radius_utm["OUTPUT_CLUSTERS"].getFeatures())
    # 9 x 9 steps of 0.001° (~111 m): the circle spans the diagonal, ~705 m.
    assert cluster["radius_m"] == pytest.approx(705, rel=0.02)
    # 10 x 10 cells of 0.001° x 0.001° (~110.3 m x 110.6 m) -> ~1.22 km².
    assert cluster["area_km2"] == pytest.approx(1.22, rel=0.02)


def test_report_is_written(grid_layer, tmp_path):
    report = tmp_path / "report.html"
    results = run({"INPUT": grid_layer, **SMALL, "OUTPUT_REPORT": str(report)})
    assert results["OUTPUT_REPORT"] == str(report)
    html = report.read_text(encoding="utf-8")
    assert "<html" in html and "Tuned Grid Clustering" in html
    assert "grid cells" in html  # how the polygons were built
    assert "OUTPUT_REPORT" not in run({"INPUT": grid_layer, **SMALL})


def test_loaded_outputs_are_styled_by_cluster(grid_layer):
    project = QgsProject.instance()
    before = set(project.mapLayers())
    results = processing.runAndLoadResults(
        ALG,
        {
            "INPUT": grid_layer,
            **SMALL,
            "OUTPUT": "TEMPORARY_OUTPUT",
            "OUTPUT_CLUSTERS": "TEMPORARY_OUTPUT",
        },
    )
    try:
        for key in ("OUTPUT", "OUTPUT_CLUSTERS"):
            layer = project.mapLayer(results[key])
            assert layer is not None
            renderer = layer.renderer()
            assert isinstance(renderer, QgsCategorizedSymbolRenderer)
            assert renderer.classAttribute() == "cluster_id"
            assert len(renderer.categories()) == results["N_CLUSTERS"]
        colours = {
            c.value(): c.symbol().color().name()
            for c in project.mapLayer(results["OUTPUT"]).renderer().categories()
        }
        from tuned_grid_clustering.algorithms.styling import cluster_colour

        assert all(colours[v] == cluster_colour(v).name() for v in colours)
        assert len(set(colours.values())) > len(colours) // 2
    finally:
        project.removeMapLayers(list(set(project.mapLayers()) - before))


# ---------------------------------------------------------------------------
# A model chaining the algorithm with native algorithms
# ---------------------------------------------------------------------------


def test_model_runs_through_processing(ph_window, ph_window_settings):
    model = QgsProcessingModelAlgorithm()
    assert model.fromFile(str(DATA / "cluster_and_summarise.model3"))
    source = QgsVectorLayer(ph_window, "window", "ogr")
    results = processing.run(
        model,
        {
            "units": ph_window,
            "target_weight": ph_window_settings["TARGET_WEIGHT"],
            "target_radius": ph_window_settings["TARGET_RADIUS"],
            "trials": 3,
            "share:clustered_units": "TEMPORARY_OUTPUT",
            "summarise:cluster_summary": "TEMPORARY_OUTPUT",
        },
    )
    units = results["share:clustered_units"]
    summary = results["summarise:cluster_summary"]
    assert units.featureCount() == source.featureCount() == 3600
    shares = attribute_table(units, ["cluster_id", "share_of_cluster"])
    totals: dict[str, float] = {}
    for cid, share in zip(shares["cluster_id"], shares["share_of_cluster"]):
        totals[cid] = totals.get(cid, 0.0) + share
    assert all(total == pytest.approx(1.0) for total in totals.values())
    rows = attribute_table(summary, ["cluster_id", "population", "cells"])
    assert sorted(rows["cluster_id"]) == sorted(totals)
    assert sum(rows["cells"]) == 3600
    assert sum(rows["population"]) == pytest.approx(342.4231, rel=1e-6)


# ---------------------------------------------------------------------------
# Bad input: QgsProcessingException naming the problem and the fix
# ---------------------------------------------------------------------------

POINT_FIELDS = [("id", QVariant.Int), ("pop", QVariant.Double), ("label", QVariant.String)]


def _points(make_layer, crs=UTM_51N, values=None, wkts=None):
    n = 10
    wkts = wkts or [f"Point ({700000 + 100 * i} {900000 + 50 * i})" for i in range(n)]
    values = values or [[i, 1.0 + i, str(i)] for i in range(n)]
    return make_layer("Point", crs, POINT_FIELDS, list(zip(wkts, values)))


def _expect_error(parameters: dict, *phrases: str) -> str:
    return helpers.expect_error(
        ALG, {"TARGET_WEIGHT": 5, "TARGET_RADIUS": 500, **FAST, **parameters}, *phrases
    )


def test_error_empty_layer(make_layer):
    layer = make_layer("Point", UTM_51N, POINT_FIELDS, [])
    _expect_error({"INPUT": layer}, "no features", "selected")


def test_error_null_and_empty_geometries(make_layer):
    wkts = [f"Point ({700000 + 100 * i} {900000})" for i in range(8)] + [None, "Point EMPTY"]
    layer = _points(make_layer, wkts=wkts)
    _expect_error(
        {"INPUT": layer}, "2 features have", "null or empty geometry", "Remove null geometries"
    )


def test_error_null_weights(make_layer):
    values = [[i, None if i in (2, 5, 7) else 1.0, "a"] for i in range(10)]
    layer = _points(make_layer, values=values)
    _expect_error({"INPUT": layer, "WEIGHT_FIELD": "pop"}, "3 features", "NULL", "coalesce")


def test_error_negative_weights(make_layer):
    values = [[i, -1.0 if i == 4 else 1.0, "a"] for i in range(10)]
    layer = _points(make_layer, values=values)
    _expect_error(
        {"INPUT": layer, "WEIGHT_FIELD": "pop"}, "1 feature ", "negative", "set them to 0"
    )


def test_error_text_weight_field(make_layer):
    _expect_error(
        {"INPUT": _points(make_layer), "WEIGHT_FIELD": "label"}, "'label'", "not numbers", "to_real"
    )


def test_error_missing_weight_field(make_layer):
    _expect_error(
        {"INPUT": _points(make_layer), "WEIGHT_FIELD": "nope"}, "'nope'", "numeric fields"
    )


@pytest.mark.parametrize(
    ("parameters", "phrases"),
    [
        ({"TARGET_WEIGHT": 0}, ("target cluster weight", "greater than 0")),
        ({"TARGET_WEIGHT": -3}, ("target cluster weight", "greater than 0")),
        ({"TARGET_RADIUS": 0}, ("target cluster radius", "greater than 0")),
        (
            {"TARGET_WEIGHT": 50, "MAX_WEIGHT": 40},
            ("maximum cluster weight", "at least the target"),
        ),
    ],
)
def test_error_bad_targets(make_layer, parameters, phrases):
    _expect_error({"INPUT": _points(make_layer), **parameters}, *phrases)


def test_bad_targets_are_reported_before_running(make_layer):
    alg = QgsApplication.processingRegistry().createAlgorithmById(ALG)
    from qgis.core import QgsProcessingContext

    ok, message = alg.checkParameterValues(
        {
            "INPUT": _points(make_layer),
            "TARGET_WEIGHT": 0,
            "TARGET_RADIUS": 10,
            "OUTPUT": "TEMPORARY_OUTPUT",
            "OUTPUT_CLUSTERS": "TEMPORARY_OUTPUT",
        },
        QgsProcessingContext(),
    )
    assert not ok and "TARGET_WEIGHT" in message


def test_error_coordinates_off_the_globe(make_layer):
    wkts = [f"Point ({100 + i} {200 + i})" for i in range(10)]
    layer = _points(make_layer, crs="EPSG:4326", wkts=wkts)
    _expect_error({"INPUT": layer}, "cannot be located on the globe", "DISTANCE_CRS")


def test_error_geographic_distance_crs(make_layer):
    _expect_error(
        {"INPUT": _points(make_layer), "DISTANCE_CRS": "EPSG:4326"},
        "not a projected CRS in metres",
    )


def test_polar_layer_uses_polar_stereographic(make_layer):
    wkts = [f"Point ({10 * i} {86 + 0.01 * i})" for i in range(10)]
    layer = _points(make_layer, crs="EPSG:4326", wkts=wkts)
    results = run({"INPUT": layer, "TARGET_WEIGHT": 5, "TARGET_RADIUS": 50000, **FAST})
    assert results["OUTPUT"].featureCount() == 10


def test_missing_dependency_is_explained(make_layer, monkeypatch):
    alg = QgsApplication.processingRegistry().createAlgorithmById(ALG)
    # As if pandas were not installed: importlib.util.find_spec returns None.
    monkeypatch.setitem(sys.modules, "pandas", None)
    ok, message = alg.canExecute()
    assert not ok
    for phrase in ("pandas", "apt install python3-pandas", "OSGeo4W", "macOS"):
        assert phrase in message
    _expect_error({"INPUT": _points(make_layer)}, "pandas", "apt install", "OSGeo4W", "macOS")


def test_runs_without_optuna(make_layer, monkeypatch):
    # Optuna is optional: only ClusteringResult.optuna_study() imports it.
    monkeypatch.setitem(sys.modules, "optuna", None)
    alg = QgsApplication.processingRegistry().createAlgorithmById(ALG)
    assert alg.canExecute()[0]
    parameters = {"WEIGHT_FIELD": "pop", "TARGET_WEIGHT": 10, "TARGET_RADIUS": 500, **FAST}
    results = run({"INPUT": _points(make_layer), **parameters})
    assert results["OUTPUT"].featureCount() == 10


def test_core_input_error_becomes_processing_exception(make_layer):
    values = [[i, 0.0, "a"] for i in range(10)]
    _expect_error(
        {"INPUT": _points(make_layer, values=values), "WEIGHT_FIELD": "pop"}, "All weights are zero"
    )


def test_features_are_read_without_geometry_checks(make_layer):
    """The default "stop on invalid geometry" setting must not drop or refuse features."""
    from processing.tools import dataobjects

    bow_tie = "Polygon ((0 0, 100 100, 100 0, 0 100, 0 0))"
    rows = [
        (f"Polygon (({x} 0, {x + 90} 0, {x + 90} 90, {x} 90, {x} 0))", [x, 1.0, "a"])
        for x in range(0, 1000, 100)
    ] + [(bow_tie, [-1, 1.0, "bad"])]
    layer = make_layer("Polygon", UTM_51N, POINT_FIELDS, rows)
    context = dataobjects.createContext()
    context.setInvalidGeometryCheck(QgsFeatureRequest.GeometryAbortOnInvalid)
    results = processing.run(
        ALG,
        {
            "INPUT": layer,
            "TARGET_WEIGHT": 4,
            "TARGET_RADIUS": 200,
            **FAST,
            "OUTPUT": "TEMPORARY_OUTPUT",
            "OUTPUT_CLUSTERS": "TEMPORARY_OUTPUT",
        },
        context=context,
    )
    assert results["OUTPUT"].featureCount() == 11


def test_error_layer_without_crs(make_layer):
    layer = make_layer("Point", "", POINT_FIELDS, [("Point (1 2)", [1, 1.0, "a"])])
    assert not layer.crs().isValid()
    _expect_error({"INPUT": layer}, "no coordinate reference system", "Assign projection")


def test_progress_and_messages_per_trial(grid_layer):
    class Recorder(QgsProcessingFeedback):
        def __init__(self):
            super().__init__()
            self.messages, self.progress_values = [], []
            self.progressChanged.connect(self.progress_values.append)

        def pushInfo(self, info):
            self.messages.append(info)

    feedback = Recorder()
    processing.run(
        ALG,
        {"INPUT": grid_layer, **SMALL, "OUTPUT": "memory:", "OUTPUT_CLUSTERS": "memory:"},
        feedback=feedback,
    )
    trials = [m for m in feedback.messages if m.startswith("Pass 1: k=")]
    assert len(trials) == SMALL["INITIAL_TRIALS"]
    assert any("Cluster polygons: grid cells" in m for m in feedback.messages)
    values = feedback.progress_values
    assert values == sorted(values) and values[-1] == 100
    assert len({round(v) for v in values if 8 <= v <= 90}) >= SMALL["INITIAL_TRIALS"]


def test_regular_grid_detection():
    from tuned_grid_clustering.algorithms.grids import detect_regular_grid

    columns, rows = np.meshgrid(np.arange(40), np.arange(30))
    keep = np.random.default_rng(1).random(columns.size) < 0.6
    lon = (125.38 + columns.ravel() / 1200.0)[keep]
    lat = (7.75 + rows.ravel() / 1200.0)[keep]
    # float32 storage noise, as in many population rasters turned into points
    xy = np.column_stack([lon.astype(np.float32), lat.astype(np.float32)]).astype(float)
    grid = detect_regular_grid(xy)
    assert grid is not None
    assert grid.lattice.spacing_x == pytest.approx(1 / 1200, rel=1e-3)
    assert grid.lattice.spacing_y == pytest.approx(1 / 1200, rel=1e-3)
    assert np.array_equal(grid.column, columns.ravel()[keep])
    assert np.array_equal(grid.row, rows.ravel()[keep])
    # Scattered points with whole-metre coordinates are not a 1 m grid.
    scattered = np.round(np.random.default_rng(2).uniform(0, 5000, size=(300, 2)))
    assert detect_regular_grid(scattered) is None
    # Two points in one cell, or a single point: no grid.
    assert detect_regular_grid(np.array([[0.0, 0.0], [0.0, 0.0], [1.0, 0.0]])) is None
    assert detect_regular_grid(np.array([[5.0, 5.0]])) is None


# ---------------------------------------------------------------------------
# Adapter building blocks (fast paths must give what the slow ones gave)
# ---------------------------------------------------------------------------

# A 7 x 6 grid of cluster codes (-1: no cell; "." in the picture below):
# cluster 0 is a ring around a hole holding cluster 1 and an empty cell, and
# whose hole touches the outside at a corner; cluster 2 has two cells that
# touch only at a corner; cluster 4 has no cell at all.
_CODES_PICTURE = """
0 0 0 0 0 . 2
0 1 1 . 0 2 .
0 1 . 1 0 . .
0 0 0 0 . 3 3
. . . . 3 3 .
3 3 3 3 3 . -
"""


def _picture_cells():
    table = [line.split() for line in _CODES_PICTURE.strip().splitlines()]
    columns, rows, codes = [], [], []
    for row_from_top, line in enumerate(table):
        for column, mark in enumerate(line):
            if mark == ".":
                continue
            columns.append(column)
            rows.append(len(table) - 1 - row_from_top)  # rows grow northwards
            codes.append(-1 if mark == "-" else int(mark))
    return np.array(columns), np.array(rows), np.array(codes)


def _traced_outlines(grid, codes, n_codes):
    """The outlines ``grid_cell_outlines`` traces, as geometries."""
    from tuned_grid_clustering.algorithms.outlines import geometry_from_wkb, grid_cell_outlines

    return [geometry_from_wkb(wkb) for wkb in grid_cell_outlines(grid, codes, n_codes)]


@pytest.mark.parametrize("flip_x", [False, True])
@pytest.mark.parametrize("flip_y", [False, True])
def test_cluster_outlines_are_the_union_of_their_cells(flip_x, flip_y):
    """Traced outlines (GDAL Polygonize) equal GEOS's union of the cells, holes and corners too."""
    from tuned_grid_clustering.algorithms.grids import RegularGrid
    from tuned_grid_clustering.algorithms.outlines import _grid_cell_union
    from tuned_grid_clustering.core.adjacency import Lattice

    columns, rows, codes = _picture_cells()
    sx, sy = (-100.0 if flip_x else 100.0), (-50.0 if flip_y else 50.0)
    # Indices run against the axes when the spacing is negative (e.g. a south-up grid).
    lattice = Lattice(700_050.0, 900_025.0, sx, sy, 7, 6)
    grid = RegularGrid(lattice, columns * (-1 if flip_x else 1), rows * (-1 if flip_y else 1))
    traced = _traced_outlines(grid, codes, 5)
    unioned = _grid_cell_union(grid, codes, 5)
    assert len(traced) == 5
    for code in range(4):
        assert traced[code].isGeosValid()
        assert traced[code].isGeosEqual(unioned[code]), code
        n_cells = int((codes == code).sum())
        assert traced[code].area() == pytest.approx(n_cells * 5000.0)
    assert traced[4].isNull()
    (ring,) = traced[0].asMultiPolygon()  # one part: a shell and a hole
    assert len(ring) == 2
    assert len(traced[2].asMultiPolygon()) == 2  # two parts touching at a corner


@pytest.mark.parametrize("batch_cells", [1_000_000, 100, 1])
def test_cluster_outlines_of_many_clusters_over_tiles(monkeypatch, batch_cells):
    """Clusters spread over several tracing tiles and one too wide for a raster.

    Also traced a range of codes at a time (as a country is), down to one code per batch.
    """
    from tuned_grid_clustering.algorithms import outlines
    from tuned_grid_clustering.algorithms.grids import RegularGrid
    from tuned_grid_clustering.core.adjacency import Lattice

    monkeypatch.setattr(outlines, "_TRACE_TILE", 8)
    monkeypatch.setattr(outlines, "_MAX_TRACE_CELLS", 150)
    monkeypatch.setattr(outlines, "_OUTLINE_BATCH_CELLS", batch_cells)
    rng = np.random.default_rng(5)
    columns, rows = np.meshgrid(np.arange(40), np.arange(30))
    columns, rows = columns.ravel(), rows.ravel()
    keep = rng.random(columns.size) < 0.8
    columns, rows = columns[keep], rows[keep]
    # Blocks of 5 x 5 cells, plus one cluster along the whole bottom row.
    codes = (rows // 5) * 8 + columns // 5
    codes[rows == 0] = 48
    grid = RegularGrid(Lattice(0.5, 0.5, 1.0, 1.0, 40, 30), columns, rows)
    traced = _traced_outlines(grid, codes, 50)
    unioned = outlines._grid_cell_union(grid, codes, 50)
    for code in range(50):
        if not (codes == code).any():
            assert traced[code].isNull()
            continue
        assert traced[code].isGeosEqual(unioned[code]), code
        assert traced[code].area() == pytest.approx(float((codes == code).sum()))


def test_bulk_geometries_are_those_qgis_builds():
    from qgis.core import QgsGeometry, QgsPointXY, QgsRectangle

    from tuned_grid_clustering.algorithms.common import point_geometries, rectangle_geometries

    x = np.array([0.5, -120.25, 1e6 / 3])
    y = np.array([7.0, 16.125, -2.0 / 3])
    for geometry, (px, py) in zip(point_geometries(x, y), zip(x, y)):
        assert geometry.asWkt(17) == QgsGeometry.fromPointXY(QgsPointXY(px, py)).asWkt(17)
    boxes = np.array([[0.0, 1.0, 2.0, 3.0], [-1.5, -2.5, 1e6 / 3, 0.1]])
    for geometry, box in zip(rectangle_geometries(*boxes.T), boxes.tolist()):
        expected = QgsGeometry.fromRect(QgsRectangle(*box))
        assert geometry.asWkb() == expected.asWkb()


def test_rectangles_are_read_without_geos_like_with_it(make_layer):
    """Grid cells' points are GEOS's points-on-surface exactly; other polygons still go to GEOS."""
    from qgis.core import QgsGeometry, QgsProcessingFeedback

    from tuned_grid_clustering.algorithms.common import read_units, representative_point

    wkts = [
        f"Polygon (({x0} {y0}, {x0 + 1 / 1200} {y0}, {x0 + 1 / 1200} {y0 + 1 / 1200}, "
        f"{x0} {y0 + 1 / 1200}, {x0} {y0}))"
        for x0, y0 in [(125.1, 7.3), (125.1 + 1 / 1200, 7.3), (-0.3, 0.1)]
    ]
    wkts.append("MultiPolygon (((0 0, 0 2, 3 2, 3 0, 0 0)))")  # one part, other direction
    wkts.append("Polygon ((0 0, 4 0, 4 1, 1 1, 1 3, 0 3, 0 0))")  # L-shape: GEOS
    wkts.append("Polygon ((0 0, 4 0, 4 1, 0 1.000001, 0 0))")  # almost a rectangle: GEOS
    rows = [(wkt, [index, 1.0]) for index, wkt in enumerate(wkts)]
    layer = make_layer(
        "MultiPolygon", "EPSG:4326", [("id", QVariant.Int), ("pop", QVariant.Double)], rows
    )
    units = read_units(layer, "pop", QgsProcessingFeedback(), collect_rectangles=True)
    for wkt, (x, y) in zip(wkts, units.xy.tolist()):
        point, _ = representative_point(QgsGeometry.fromWkt(wkt), True)
        assert (x, y) == (point.x(), point.y())
    assert units.rectangle_boxes is None  # the L-shape is no rectangle
    cells = make_layer(
        "Polygon", "EPSG:4326", [("id", QVariant.Int), ("pop", QVariant.Double)], rows[:3]
    )
    boxes = read_units(cells, None, QgsProcessingFeedback(), collect_rectangles=True)
    assert boxes.rectangle_boxes.shape == (3, 4)
    assert boxes.rectangle_boxes[0].tolist() == [125.1, 7.3, 125.1 + 1 / 1200, 7.3 + 1 / 1200]


def test_to_metric_matches_qgis_point_by_point():
    from tuned_grid_clustering.algorithms.metric_crs import _to_metric_qgis, to_metric

    rng = np.random.default_rng(4)
    xy = np.column_stack([rng.uniform(120, 126, 500), rng.uniform(5, 18, 500)])
    wgs84 = QgsCoordinateReferenceSystem("EPSG:4326")
    context = QgsCoordinateTransformContext()
    for target in ("EPSG:32651", "EPSG:3121"):
        crs = QgsCoordinateReferenceSystem(target)
        fast = to_metric(xy, wgs84, crs, context)
        slow = _to_metric_qgis(xy, wgs84, crs, context)
        assert np.allclose(fast, slow, rtol=0, atol=1e-6)


@pytest.mark.parametrize("keep_max", [0, 100_000])
def test_output_copies_every_feature_read_once_or_twice(grid_layer, monkeypatch, keep_max):
    """Small layers are kept from the first read, larger ones read again: same OUTPUT."""
    from tuned_grid_clustering.algorithms import common

    monkeypatch.setattr(common, "KEEP_FEATURES_MAX", keep_max)
    results = run({"INPUT": grid_layer, **SMALL})
    units = attribute_table(results["OUTPUT"], ["id", "pop", "cluster_id", "cluster_status"])
    expected = attribute_table(grid_layer, ["id", "pop"])
    assert sorted(zip(units["id"], units["pop"])) == sorted(zip(expected["id"], expected["pop"]))
    assert all(units["cluster_id"]) and set(units["cluster_status"]) == {"ok"}
    geometries = {f["id"]: f.geometry().asWkt() for f in results["OUTPUT"].getFeatures()}
    assert geometries == {f["id"]: f.geometry().asWkt() for f in grid_layer.getFeatures()}


def test_points_and_multipoints_are_read_as_before(make_layer):
    from qgis.core import QgsProcessingFeedback

    from tuned_grid_clustering.algorithms.common import read_units

    fields = [("id", QVariant.Int), ("pop", QVariant.Double)]
    points = make_layer("Point", UTM_51N, fields, [("Point (700010 900020)", [0, 1.0])])
    assert read_units(points, "pop", QgsProcessingFeedback()).xy.tolist() == [[700010, 900020]]
    rows = [
        ("MultiPoint ((700010 900020))", [0, 1.0]),
        ("MultiPoint ((700000 900000), (700020 900040))", [1, 1.0]),
    ]
    multi = make_layer("MultiPoint", UTM_51N, fields, rows)
    xy = read_units(multi, "pop", QgsProcessingFeedback()).xy
    assert xy.tolist() == [[700010, 900020], [700010, 900020]]  # the point; the centroid


def test_canonical_order_is_row_major_from_the_north_west():
    """Units already in reading order need no sort; any other order is sorted to it."""
    from tuned_grid_clustering.algorithms.grids import canonical_order

    columns, rows_up = np.meshgrid(np.arange(4), np.arange(3)[::-1])  # top row first
    columns, rows_up = columns.ravel(), rows_up.ravel()
    assert canonical_order(columns, rows_up) is None
    rng = np.random.default_rng(3)
    shuffled = rng.permutation(columns.size)
    order = canonical_order(columns[shuffled], rows_up[shuffled])
    assert (columns[shuffled][order] == columns).all()
    assert (rows_up[shuffled][order] == rows_up).all()
    # South-up (rows growing downwards in the file): sorted too.
    assert canonical_order(columns[::-1], rows_up[::-1]) is not None
