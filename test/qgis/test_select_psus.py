"""Real-QGIS tests of ``gridsampling:selectpsus`` (Select PSUs (PPS))."""

from __future__ import annotations

from collections import defaultdict

import pytest

qgis_core = pytest.importorskip("qgis.core")

from qgis.core import (  # noqa: E402
    QgsApplication,
    QgsFeature,
    QgsGeometry,
    QgsPointXY,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingProvider,
    QgsRectangle,
    QgsVectorLayer,
)
from qgis.PyQt.QtCore import QVariant  # noqa: E402

pytestmark = pytest.mark.qgis

ALGORITHM_ID = "gridsampling:selectpsus"

# Stratum A: 7 clusters, one of them (size 400) a certainty unit for n = 2.
# Stratum B: 5 clusters.
SIZES = [10, 15, 20, 400, 30, 35, 40, 45, 50, 55, 60, 65]
STRATA = ["A"] * 7 + ["B"] * 5


class _SelectPsusOnlyProvider(QgsProcessingProvider):
    """Stand-in provider for when the plugin's provider is not registered."""

    def id(self) -> str:
        return "gridsamplingselectpsustest"

    def name(self) -> str:
        return "Select PSUs test provider"

    def loadAlgorithms(self) -> None:
        from tuned_grid_clustering.algorithms.select_psus import SelectPsusAlgorithm

        self.addAlgorithm(SelectPsusAlgorithm())


@pytest.fixture(scope="module")
def algorithm_id():
    """The plugin's algorithm id (conftest loads the plugin); a stand-in provider's otherwise."""
    registry = QgsApplication.processingRegistry()
    if registry.algorithmById(ALGORITHM_ID) is not None:
        yield ALGORITHM_ID
        return
    from processing.core.Processing import Processing

    Processing.initialize()
    provider = _SelectPsusOnlyProvider()
    assert registry.addProvider(provider)
    yield f"{provider.id()}:selectpsus"
    registry.removeProvider(provider)


def _run(algorithm_id, **parameters):
    import processing

    context = QgsProcessingContext()
    arguments = {"OUTPUT": "memory:", "OUTPUT_FRAME": "memory:", **parameters}
    return processing.run(
        algorithm_id, arguments, context=context, feedback=QgsProcessingFeedback()
    )


def _clusters(sizes=SIZES, strata=STRATA, *, points=False, extra_fields=""):
    kind = "Point" if points else "Polygon"
    layer = QgsVectorLayer(
        f"{kind}?crs=EPSG:32651&field=id:integer&field=pop:double&field=strat:string"
        f"&field=n_psu:integer{extra_fields}",
        "clusters",
        "memory",
    )
    features = []
    for i, (size, stratum) in enumerate(zip(sizes, strata)):
        feature = QgsFeature(layer.fields())
        x, y = (i % 4) * 1000.0, (i // 4) * 1000.0
        if points:
            feature.setGeometry(QgsGeometry.fromPointXY(QgsPointXY(x, y)))
        else:
            feature.setGeometry(QgsGeometry.fromRect(QgsRectangle(x, y, x + 900, y + 900)))
        attributes = [i, size, stratum, 2 if stratum == "A" else 3]
        attributes += [None] * (layer.fields().count() - len(attributes))
        feature.setAttributes(attributes)
        features.append(feature)
    assert layer.dataProvider().addFeatures(features)[0]
    return layer


def _pi_sum_per_stratum(layer):
    sums = defaultdict(float)
    for feature in layer.getFeatures():
        sums[feature["stratum"]] += feature["pi"]
    return dict(sums)


def test_systematic_pps_outputs(algorithm_id, tmp_path):
    report = tmp_path / "report.html"
    result = _run(
        algorithm_id,
        INPUT=_clusters(),
        SIZE_FIELD="pop",
        STRATUM_FIELD="strat",
        SAMPLE_SIZE=2,
        SEED=1,
        OUTPUT_REPORT=str(report),
    )
    selected, frame = result["OUTPUT"], result["OUTPUT_FRAME"]
    assert result["N_SELECTED"] == 4 and result["N_FRAME"] == 12 and result["N_STRATA"] == 2
    assert result["SEED_USED"] == 1
    assert selected.featureCount() == 4 and frame.featureCount() == 12
    names = selected.fields().names()
    for name in ("id", "pop", "strat", "stratum", "pi", "design_weight", "certainty"):
        assert name in names
    for name in ("selected", "replacement", "selection_order"):
        assert name in names
    assert _pi_sum_per_stratum(frame) == pytest.approx({"A": 2.0, "B": 2.0})
    for feature in selected.getFeatures():
        assert feature["design_weight"] == pytest.approx(1.0 / feature["pi"])
        assert feature["selected"] == 1 and feature["replacement"] == 0
        assert not feature.geometry().isEmpty()
    # pi = n * size / total (after removing the certainty unit in A)
    by_id = {feature["id"]: feature for feature in frame.getFeatures()}
    assert by_id[3]["pi"] == 1.0 and by_id[3]["certainty"] == 1 and by_id[3]["selected"] == 1
    assert by_id[6]["pi"] == pytest.approx(40 / (10 + 15 + 20 + 30 + 35 + 40))
    assert by_id[11]["pi"] == pytest.approx(2 * 65 / sum(SIZES[7:]))
    assert sum(feature["selected"] for feature in frame.getFeatures()) == 4
    orders = sorted((f["stratum"], f["selection_order"]) for f in selected.getFeatures())
    assert orders == [("A", 1), ("A", 2), ("B", 1), ("B", 2)]
    page = report.read_text(encoding="utf-8")
    assert result["OUTPUT_REPORT"] == str(report)
    assert "<svg" in page and "<td>A</td><td>7</td><td>2</td>" in page


def test_same_seed_same_sample_and_drawn_seed_reproduces(algorithm_id):
    parameters = {"SIZE_FIELD": "pop", "STRATUM_FIELD": "strat", "SAMPLE_SIZE": 2}

    def chosen(result):
        return sorted(feature["id"] for feature in result["OUTPUT"].getFeatures())

    first = _run(algorithm_id, INPUT=_clusters(), SEED=7, **parameters)
    second = _run(algorithm_id, INPUT=_clusters(), SEED=7, **parameters)
    assert chosen(first) == chosen(second)
    unseeded = _run(algorithm_id, INPUT=_clusters(), **parameters)
    seed = unseeded["SEED_USED"]
    assert isinstance(seed, int)
    again = _run(algorithm_id, INPUT=_clusters(), SEED=seed, **parameters)
    assert chosen(again) == chosen(unseeded)


@pytest.mark.parametrize("method", [1, 2])
def test_srs_and_sampford(algorithm_id, method):
    result = _run(
        algorithm_id,
        INPUT=_clusters(points=True),
        SIZE_FIELD="pop" if method == 2 else None,
        STRATUM_FIELD="strat",
        SAMPLE_SIZE=3,
        METHOD=method,
        SEED=3,
    )
    assert result["N_SELECTED"] == 6
    assert _pi_sum_per_stratum(result["OUTPUT_FRAME"]) == pytest.approx({"A": 3.0, "B": 3.0})
    if method == 1:
        pis = {round(f["pi"], 12) for f in result["OUTPUT_FRAME"].getFeatures()}
        assert pis == {round(3 / 7, 12), round(3 / 5, 12)}


def test_replacements(algorithm_id):
    result = _run(
        algorithm_id,
        INPUT=_clusters(),
        SIZE_FIELD="pop",
        STRATUM_FIELD="strat",
        SAMPLE_SIZE=2,
        N_REPLACEMENTS=2,
        SEED=5,
    )
    assert result["N_SELECTED"] == 4 and result["N_REPLACEMENTS_SELECTED"] == 4
    selected = result["OUTPUT"]
    assert selected.featureCount() == 8
    ranks = defaultdict(list)
    for feature in selected.getFeatures():
        ranks[feature["stratum"]].append(feature["replacement"])
        assert feature["selected"] == (1 if feature["replacement"] == 0 else 0)
    assert {key: sorted(value) for key, value in ranks.items()} == {
        "A": [0, 0, 1, 2],
        "B": [0, 0, 1, 2],
    }
    frame = list(result["OUTPUT_FRAME"].getFeatures())
    not_drawn = [f for f in frame if _is_null(f["replacement"])]
    assert len(not_drawn) == 4
    assert all(_is_null(f["selection_order"]) and f["selected"] == 0 for f in not_drawn)


def _is_null(value) -> bool:
    return value is None or (isinstance(value, QVariant) and value.isNull())


def test_sample_sizes_from_field_and_table(algorithm_id):
    from_field = _run(
        algorithm_id,
        INPUT=_clusters(),
        SIZE_FIELD="pop",
        STRATUM_FIELD="strat",
        SAMPLE_SIZE_FIELD="n_psu",
        SEED=2,
    )
    assert _pi_sum_per_stratum(from_field["OUTPUT_FRAME"]) == pytest.approx({"A": 2.0, "B": 3.0})

    # numeric strata in the frame, text strata in the table: matched as text
    table = QgsVectorLayer("None?field=region:string&field=psus:integer", "sizes", "memory")
    rows = []
    for region, psus in (("1", 1), ("2", 4)):
        row = QgsFeature(table.fields())
        row.setAttributes([region, psus])
        rows.append(row)
    table.dataProvider().addFeatures(rows)
    layer = _clusters(extra_fields="&field=region:integer")
    region_index = layer.fields().lookupField("region")
    layer.dataProvider().changeAttributeValues(
        {f.id(): {region_index: 1 if f["strat"] == "A" else 2} for f in layer.getFeatures()}
    )
    from_table = _run(
        algorithm_id,
        INPUT=layer,
        SIZE_FIELD="pop",
        STRATUM_FIELD="region",
        SAMPLE_SIZE_TABLE=table,
        SAMPLE_SIZE_TABLE_STRATUM_FIELD="region",
        SAMPLE_SIZE_TABLE_SIZE_FIELD="psus",
        SEED=2,
    )
    assert from_table["N_SELECTED"] == 5
    assert _pi_sum_per_stratum(from_table["OUTPUT_FRAME"]) == pytest.approx({"1": 1.0, "2": 4.0})


def test_input_fields_named_like_outputs_are_replaced(algorithm_id):
    layer = _clusters(extra_fields="&field=pi:double")
    result = _run(algorithm_id, INPUT=layer, SIZE_FIELD="pop", SAMPLE_SIZE=3, SEED=1)
    names = result["OUTPUT_FRAME"].fields().names()
    assert names.count("pi") == 1
    assert sum(f["pi"] for f in result["OUTPUT_FRAME"].getFeatures()) == pytest.approx(3.0)
    assert {f["stratum"] for f in result["OUTPUT"].getFeatures()} == {"all"}


def _table_with(stratum_sizes):
    table = QgsVectorLayer("None?field=strat:string&field=psus:integer", "sizes", "memory")
    rows = []
    for stratum, psus in stratum_sizes:
        row = QgsFeature(table.fields())
        row.setAttributes([stratum, psus])
        rows.append(row)
    table.dataProvider().addFeatures(rows)
    return table


@pytest.mark.parametrize(
    ("layer_kwargs", "parameters", "message"),
    [
        ({}, {"SAMPLE_SIZE": 6}, "has 5 cluster"),
        ({}, {"SAMPLE_SIZE": 4, "N_REPLACEMENTS": 2}, "replacement"),
        ({"sizes": [10, 0] + SIZES[2:]}, {}, "zero, negative"),
        ({"sizes": [10, -5] + SIZES[2:]}, {}, "zero, negative"),
        ({"sizes": [None] + SIZES[1:]}, {}, "no size"),
        ({"strata": [None] + STRATA[1:]}, {}, "no stratum"),
        ({}, {"SIZE_FIELD": None}, "needs a measure of size"),
        ({}, {"SAMPLE_SIZE_TABLE": "table:A,B,C"}, "no clusters"),
        ({}, {"SAMPLE_SIZE_TABLE": "table:A"}, "No sample size is given"),
        ({}, {"SAMPLE_SIZE_FIELD": "pop"}, "different values"),
    ],
)
def test_bad_input_raises(algorithm_id, layer_kwargs, parameters, message):
    arguments = {
        "INPUT": _clusters(**layer_kwargs),
        "SIZE_FIELD": "pop",
        "STRATUM_FIELD": "strat",
        "SAMPLE_SIZE": 2,
        "SEED": 1,
        **parameters,
    }
    table_spec = arguments.get("SAMPLE_SIZE_TABLE")
    if isinstance(table_spec, str):
        arguments["SAMPLE_SIZE_TABLE"] = _table_with(
            [(name, 1) for name in table_spec.split(":")[1].split(",")]
        )
        arguments["SAMPLE_SIZE_TABLE_STRATUM_FIELD"] = "strat"
        arguments["SAMPLE_SIZE_TABLE_SIZE_FIELD"] = "psus"
    with pytest.raises(QgsProcessingException, match=message):
        _run(algorithm_id, **arguments)


def test_metadata(algorithm_id):
    algorithm = QgsApplication.processingRegistry().algorithmById(algorithm_id)
    assert algorithm.name() == "selectpsus"
    assert algorithm.displayName() == "Select PSUs (PPS)"
    assert (algorithm.group(), algorithm.groupId()) == ("Sampling", "sampling")
    assert algorithm.canExecute()[0]
    keys = {p.name() for p in algorithm.parameterDefinitions()}
    assert {
        "INPUT",
        "SIZE_FIELD",
        "STRATUM_FIELD",
        "SAMPLE_SIZE",
        "SAMPLE_SIZE_FIELD",
        "SAMPLE_SIZE_TABLE",
        "METHOD",
        "N_REPLACEMENTS",
        "SEED",
        "OUTPUT",
        "OUTPUT_FRAME",
        "OUTPUT_REPORT",
    } <= keys
    assert {"N_SELECTED", "SEED_USED"} <= {o.name() for o in algorithm.outputDefinitions()}
    assert "certainty" in algorithm.shortHelpString()
