"""Strata (partitions) on both clustering algorithms, in a real (headless) QGIS."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import processing
import pytest
from qgis.core import QgsVectorLayer
from qgis.PyQt.QtCore import QVariant

from tuned_grid_clustering.test.qgis.helpers import (
    FAST,
    RASTER_ALG,
    UTM_51N,
    VECTOR_ALG,
    Recorder,
    expect_error,
    run,
    table,
)

ALG = VECTOR_ALG
# Between two columns of cell centres of the ph grid (cells of 1/1200°).
SPLIT_LON = 125.5204
WEST = {"side": "west", "tw": 240.0, "mn": 180.0, "mx": 300.0}
EAST = {"side": "east", "tw": 120.0, "mn": 90.0, "mx": 150.0}
PER_PARTITION = {
    "PARTITION_FIELD": "side",
    "TARGET_WEIGHT_FIELD": "tw",
    "MIN_WEIGHT_FIELD": "mn",
    "MAX_WEIGHT_FIELD": "mx",
}
DEMO_SETTINGS = {"TARGET_WEIGHT": 240, "MIN_WEIGHT": 180, "MAX_WEIGHT": 300, **FAST}


def cells_by_coordinates(layer: QgsVectorLayer, origin: tuple[float, float], size: float):
    """(row, col) of each point of ``layer`` on a north-up grid of ``size`` cells."""
    x0, y0 = origin
    cells = []
    for feature in layer.getFeatures():
        point = feature.geometry().centroid().asPoint()
        cells.append((int((y0 - point.y()) // size), int((point.x() - x0) // size)))
    return cells


# ---------------------------------------------------------------------------
# The shared data split in two by longitude, each half with its own targets
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ph_halves(ph_points) -> QgsVectorLayer:
    """ph grid points with ``side`` (west/east of SPLIT_LON) and per-side targets tw, mn, mx."""

    def by_side(west, east) -> str:
        quote = (lambda v: f"'{v}'") if isinstance(west, str) else str
        return f'if("Lon" < {SPLIT_LON}, {quote(west)}, {quote(east)})'

    mapping = [
        {"expression": '"grid_id"', "name": "grid_id", "type": QVariant.String, "length": 0},
        {"expression": '"population"', "name": "population", "type": QVariant.Double},
        {"expression": by_side("west", "east"), "name": "side", "type": QVariant.String},
    ] + [
        {"expression": by_side(WEST[name], EAST[name]), "name": name, "type": QVariant.Double}
        for name in ("tw", "mn", "mx")
    ]
    for entry in mapping:
        entry.setdefault("length", 0)
        entry.setdefault("precision", 0)
    return processing.run(
        "native:refactorfields",
        {"INPUT": ph_points, "FIELDS_MAPPING": mapping, "OUTPUT": "TEMPORARY_OUTPUT"},
    )["OUTPUT"]


def halves_polygons(make_layer) -> QgsVectorLayer:
    """The two halves as polygons with the same fields, for the raster algorithm."""
    fields = [("side", QVariant.String), ("tw", QVariant.Double), ("mn", QVariant.Double)]
    fields.append(("mx", QVariant.Double))
    west = f"Polygon ((125 7, {SPLIT_LON} 7, {SPLIT_LON} 9, 125 9, 125 7))"
    east = f"Polygon (({SPLIT_LON} 7, 126 7, 126 9, {SPLIT_LON} 9, {SPLIT_LON} 7))"
    rows = [(west, [WEST[k] for k in ("side", "tw", "mn", "mx")])]
    rows.append((east, [EAST[k] for k in ("side", "tw", "mn", "mx")]))
    return make_layer("Polygon", "EPSG:4326", fields, rows, name="halves")


def test_strata_split_by_longitude(ph_halves, shared_data, make_layer):
    feedback = Recorder()
    points = run(
        ALG,
        {
            "INPUT": ph_halves,
            "WEIGHT_FIELD": "population",
            **PER_PARTITION,
            "TARGET_WEIGHT": 240,
            "TARGET_RADIUS": 1000,
            "N_JOBS": 2,
            **FAST,
        },
        feedback,
    )
    units = table(points["OUTPUT"], ["side", "cluster_id", "cluster_weight", "cluster_status"])
    assert len(units["side"]) == 69226
    assert any(
        m.startswith("2 partitions from 'side'; 2 with their own targets") for m in feedback.infos
    )
    # No cluster has members on both sides; its ID names its side.
    sides_of = defaultdict(set)
    for side, cid in zip(units["side"], units["cluster_id"]):
        sides_of[cid].add(side)
    assert all(len(sides) == 1 for sides in sides_of.values())
    assert all(cid.split("/")[0] == next(iter(sides)) for cid, sides in sides_of.items())
    assert all(cid.split("/")[1].startswith("CLUSTER_") for cid in sides_of)
    # Each side's clusters meet their own targets.
    clusters = table(points["OUTPUT_CLUSTERS"], ["partition", "cluster_id", "weight", "status"])
    assert set(clusters["partition"]) == {"west", "east"}
    for targets in (WEST, EAST):
        weights = [
            w for p, w in zip(clusters["partition"], clusters["weight"]) if p == targets["side"]
        ]
        ok = [
            w
            for p, w, s in zip(clusters["partition"], clusters["weight"], clusters["status"])
            if p == targets["side"] and s == "ok"
        ]
        in_range = [w for w in weights if targets["mn"] <= w <= targets["mx"]]
        assert len(in_range) >= 0.8 * len(weights), targets["side"]
        assert all(targets["mn"] <= w <= targets["mx"] for w in ok)
        assert np.median(weights) == pytest.approx(targets["tw"], rel=0.25)
    assert points["SHARE_CONTIGUOUS"] == 1.0

    # The raster algorithm with the halves as polygons gives the same clusters.
    raster = run(
        RASTER_ALG,
        {
            "INPUT": str(shared_data / "ph_population.tif"),
            "PARTITIONS": halves_polygons(make_layer),
            **PER_PARTITION,
            "TARGET_WEIGHT": 240,
            "TARGET_RADIUS": 1000,
            "N_JOBS": 2,
            **FAST,
            "OUTPUT_GEOMETRY": 1,
        },
    )
    cells = table(raster["OUTPUT"], ["row", "col", "partition", "cluster_id"])
    by_cell = dict(zip(zip(cells["row"], cells["col"]), cells["cluster_id"]))
    origin = (125.37958284660506, 8.002916836057622)
    point_cells = cells_by_coordinates(points["OUTPUT"], origin, 1 / 1200)
    assert set(point_cells) == set(by_cell)
    assert [by_cell[c] for c in point_cells] == units["cluster_id"]


# ---------------------------------------------------------------------------
# Per-partition radius from a field: the original's urban/rural rule
# ---------------------------------------------------------------------------


def test_per_partition_radius_from_the_admin_layer(demo_data):
    raster = str(demo_data / "demo_population.tif")
    admin = f"{demo_data / 'demo_admin.gpkg'}|layername=admin"
    common = {"INPUT": raster, "PARTITIONS": admin, "PARTITION_FIELD": "admin", **DEMO_SETTINGS}
    common["OUTPUT_GEOMETRY"] = 1
    by_field = run(RASTER_ALG, {**common, "TARGET_RADIUS_FIELD": "target_radius"})
    urban = {f["admin"]: f["urban"] for f in QgsVectorLayer(admin, "a", "ogr").getFeatures()}
    assert set(urban.values()) == {0, 1}
    names = ["row", "col", "partition", "cluster_id"]
    cells = table(by_field["OUTPUT"], names)
    for radius, is_urban in ((1000, 1), (2000, 0)):
        constant = table(run(RASTER_ALG, {**common, "TARGET_RADIUS": radius})["OUTPUT"], names)
        assert [cells[n][:10] for n in ("row", "col")] == [constant[n][:10] for n in ("row", "col")]
        # A partition's clusters depend only on its own cells and targets.
        keep = [i for i, p in enumerate(cells["partition"]) if urban[p] == is_urban]
        assert [cells["cluster_id"][i] for i in keep] == [constant["cluster_id"][i] for i in keep]
    assert all(cid.split("/")[0] == p for p, cid in zip(cells["partition"], cells["cluster_id"]))

    # The grid points with target_radius joined from the admin layer: the same clusters.
    joined = processing.run(
        "native:joinattributestable",
        {
            "INPUT": f"{demo_data / 'demo_grid_points.gpkg'}|layername=grid_points",
            "FIELD": "admin",
            "INPUT_2": admin,
            "FIELD_2": "admin",
            "FIELDS_TO_COPY": ["target_radius"],
            "METHOD": 1,
            "PREFIX": "",
            "OUTPUT": "TEMPORARY_OUTPUT",
        },
    )["OUTPUT"]
    points = run(
        ALG,
        {
            "INPUT": joined,
            "WEIGHT_FIELD": "population",
            "PARTITION_FIELD": "admin",
            "TARGET_RADIUS_FIELD": "target_radius",
            **DEMO_SETTINGS,
        },
    )
    from osgeo import gdal

    x0, _, _, y0, _, _ = gdal.Open(raster).GetGeoTransform()
    point_cells = cells_by_coordinates(points["OUTPUT"], (x0, y0), 1 / 1200)
    by_cell = dict(zip(zip(cells["row"], cells["col"]), cells["cluster_id"]))
    assert [by_cell[c] for c in point_cells] == table(points["OUTPUT"], ["cluster_id"])[
        "cluster_id"
    ]


def test_partitions_give_the_same_clusters_whatever_threads(demo_data):
    common = {
        "INPUT": f"{demo_data / 'demo_grid_points.gpkg'}|layername=grid_points",
        "WEIGHT_FIELD": "population",
        "PARTITION_FIELD": "admin",
        **DEMO_SETTINGS,
    }
    one = table(run(ALG, {**common, "N_JOBS": 1})["OUTPUT"], ["cluster_id", "cluster_status"])
    two = table(run(ALG, {**common, "N_JOBS": 2})["OUTPUT"], ["cluster_id", "cluster_status"])
    assert one == two


# ---------------------------------------------------------------------------
# A partition that fails, and bad input
# ---------------------------------------------------------------------------

FIELDS = [
    ("id", QVariant.Int),
    ("pop", QVariant.Double),
    ("zone", QVariant.String),
    ("radius", QVariant.Double),
    ("max_w", QVariant.Double),
]


def zones_layer(make_layer, zones=("a", "b"), pop=None, radius=None, max_w=None):
    """Two 10 x 10 grids of 100 m cells side by side, one per zone."""
    rows = []
    for z, zone in enumerate(zones):
        for i in range(10):
            for j in range(10):
                index = len(rows)
                x, y = 700000 + z * 2000 + i * 100, 900000 + j * 100
                values = [
                    index,
                    1.0 + (index % 5) if pop is None else pop(zone, index),
                    zone,
                    None if radius is None else radius(zone, index),
                    None if max_w is None else max_w(zone, index),
                ]
                rows.append((f"Point ({x} {y})", values))
    return make_layer("Point", UTM_51N, FIELDS, rows)


SMALL = {"WEIGHT_FIELD": "pop", "TARGET_WEIGHT": 40, "TARGET_RADIUS": 300, **FAST}


def test_a_failed_partition_keeps_the_others(make_layer, tmp_path):
    layer = zones_layer(make_layer, pop=lambda zone, i: 0.0 if zone == "b" else 2.0)
    feedback = Recorder()
    report = tmp_path / "report.html"
    results = run(
        ALG,
        {"INPUT": layer, **SMALL, "PARTITION_FIELD": "zone", "OUTPUT_REPORT": str(report)},
        feedback,
    )
    units = table(results["OUTPUT"], ["zone", "cluster_id", "cluster_status", "cluster_weight"])
    assert len(units["zone"]) == 200  # nothing lost
    for zone, cid, status, weight in zip(*units.values()):
        if zone == "b":
            assert (cid, status, weight) == (None, "failed", None)
        else:
            assert cid.startswith("a/CLUSTER_") and status != "failed"
    assert any("Partition 'b' failed" in m and "All weights are zero" in m for m in feedback.errors)
    clusters = table(results["OUTPUT_CLUSTERS"], ["partition"])["partition"]
    assert set(clusters) == {"a"} and len(clusters) == results["N_CLUSTERS"]
    html = report.read_text(encoding="utf-8")
    assert "Partition &#x27;b&#x27; failed" in html or "Partition 'b' failed" in html

    every = zones_layer(make_layer, pop=lambda zone, i: 0.0)
    expect_error(
        ALG, {"INPUT": every, **SMALL, "PARTITION_FIELD": "zone"}, "Every partition failed (2)"
    )


def test_error_partition_field_with_nulls(make_layer):
    layer = zones_layer(make_layer, zones=(None, None))
    expect_error(
        ALG,
        {"INPUT": layer, **SMALL, "PARTITION_FIELD": "zone"},
        "is NULL (or empty) for every feature (200)",
        "PARTITION_FIELD empty",
    )
    some = zones_layer(make_layer, zones=("a", ""))
    expect_error(
        ALG,
        {"INPUT": some, **SMALL, "PARTITION_FIELD": "zone"},
        "100 of 200 features have no value",
        "coalesce",
    )


def test_error_per_partition_values(make_layer):
    varying = zones_layer(make_layer, radius=lambda zone, i: 300.0 + (i % 2) * 100)
    expect_error(
        ALG,
        {"INPUT": varying, **SMALL, "PARTITION_FIELD": "zone", "TARGET_RADIUS_FIELD": "radius"},
        "Partition 'a' has 2 different values",
        "'radius'",
        "(300, 400)",
    )
    too_low = zones_layer(make_layer, max_w=lambda zone, i: 30.0 if zone == "b" else None)
    expect_error(
        ALG,
        {"INPUT": too_low, **SMALL, "PARTITION_FIELD": "zone", "MAX_WEIGHT_FIELD": "max_w"},
        "Partition 'b'",
        "maximum cluster weight (30) is below the target weight (40)",
    )
    expect_error(
        ALG,
        {"INPUT": zones_layer(make_layer), **SMALL, "TARGET_RADIUS_FIELD": "radius"},
        "need partitions",
        "PARTITION_FIELD",
    )


def test_null_per_partition_value_falls_back_to_the_constant(make_layer):
    layer = zones_layer(make_layer, radius=lambda zone, i: 1000.0 if zone == "a" else None)
    feedback = Recorder()
    run(
        ALG,
        {"INPUT": layer, **SMALL, "PARTITION_FIELD": "zone", "TARGET_RADIUS_FIELD": "radius"},
        feedback,
    )
    assert any("2 partitions from 'zone'; 1 with their own targets" in m for m in feedback.infos)


# ---------------------------------------------------------------------------
# Raster partitions: cells outside, empty partitions, bad input
# ---------------------------------------------------------------------------


def test_raster_cells_outside_partitions_and_empty_partitions(demo_data, make_layer, tmp_path):
    raster = str(demo_data / "demo_population.tif")
    from osgeo import gdal

    dataset = gdal.Open(raster)
    x0, dx, _, y0, _, dy = dataset.GetGeoTransform()
    values = dataset.GetRasterBand(1).ReadAsArray()
    dataset = None
    middle = x0 + dx * (values.shape[1] // 2)  # a column edge
    west_weight = float(
        values[:, : values.shape[1] // 2][values[:, : values.shape[1] // 2] > 0].sum()
    )
    east = values[:, values.shape[1] // 2 :]
    fields = [("name", QVariant.String)]
    rows = [
        (
            f"Polygon (({x0} {y0 + dy * values.shape[0]}, {middle} {y0 + dy * values.shape[0]}, "
            f"{middle} {y0}, {x0} {y0}, {x0} {y0 + dy * values.shape[0]}))",
            ["west"],
        ),
        ("Polygon ((0 0, 1 0, 1 1, 0 1, 0 0))", ["nowhere"]),
    ]
    partitions = make_layer("Polygon", "EPSG:4326", fields, rows, name="west")
    feedback = Recorder()
    report = tmp_path / "report.html"
    results = run(
        RASTER_ALG,
        {
            "INPUT": raster,
            "PARTITIONS": partitions,
            "PARTITION_FIELD": "name",
            **DEMO_SETTINGS,
            "OUTPUT_REPORT": str(report),
        },
        feedback,
    )
    n_east = int((east > 0).sum())
    assert results["OUTPUT"].featureCount() == 8000 - n_east
    weights = table(results["OUTPUT_CLUSTERS"], ["weight"])["weight"]
    assert sum(weights) == pytest.approx(west_weight, rel=1e-6)
    outside = f"{n_east:,} populated cells (weight {float(east[east > 0].sum()):,.1f}) lie outside"
    assert any(outside in m for m in feedback.warnings)
    assert any("1 partitions hold no populated cell: nowhere" in m for m in feedback.warnings)
    html = report.read_text(encoding="utf-8")
    assert outside in html and "nowhere" in html


def test_raster_partition_errors(demo_data, make_layer):
    raster = str(demo_data / "demo_population.tif")
    admin = f"{demo_data / 'demo_admin.gpkg'}|layername=admin"
    base = {"INPUT": raster, **DEMO_SETTINGS}
    expect_error(RASTER_ALG, {**base, "PARTITIONS": admin}, "Choose the PARTITION_FIELD")
    expect_error(
        RASTER_ALG, {**base, "TARGET_RADIUS_FIELD": "target_radius"}, "choose a PARTITIONS layer"
    )
    far = make_layer(
        "Polygon",
        "EPSG:4326",
        [("name", QVariant.String)],
        [("Polygon ((0 0, 1 0, 1 1, 0 0))", ["x"])],
    )
    expect_error(
        RASTER_ALG,
        {**base, "PARTITIONS": far, "PARTITION_FIELD": "name"},
        "None of the 8,000 populated cells",
        "covers the raster",
    )
    nulls = make_layer(
        "Polygon",
        "EPSG:4326",
        [("name", QVariant.String)],
        [("Polygon ((120 14, 122 14, 122 15, 120 14))", [None])],
    )
    expect_error(
        RASTER_ALG,
        {**base, "PARTITIONS": nulls, "PARTITION_FIELD": "name"},
        "NULL (or empty) for every partition polygon",
    )
