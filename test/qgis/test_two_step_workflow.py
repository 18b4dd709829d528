"""Cluster, then select: the model chaining both algorithms, in QGIS and through qgis_process."""

from __future__ import annotations

from pathlib import Path

import processing
import pytest
from qgis.core import QgsProcessingModelAlgorithm, QgsVectorLayer

from tuned_grid_clustering.test.qgis.helpers import qgis_process_run, table

MODEL = Path(__file__).resolve().parent / "data" / "cluster_and_select.model3"
SAMPLE_SIZE = 6


def model_inputs(demo_data: Path) -> dict:
    return {
        "units": f"{demo_data / 'demo_grid_points.gpkg'}|layername=grid_points",
        "weight_field": "population",
        "target_weight": 240,
        "target_radius": 1000,
        "sample_size": SAMPLE_SIZE,
    }


def check_sample(frame: QgsVectorLayer, sample: QgsVectorLayer) -> None:
    """Exactly n PSUs, pi summing to n, pi proportional to size, design weight 1/pi."""
    rows = table(frame, ["cluster_id", "weight", "pi", "selected"])
    total = sum(rows["weight"])
    assert sum(rows["pi"]) == pytest.approx(SAMPLE_SIZE)
    assert sum(bool(s) for s in rows["selected"]) == SAMPLE_SIZE
    for weight, pi in zip(rows["weight"], rows["pi"]):
        assert pi == pytest.approx(min(1.0, SAMPLE_SIZE * weight / total))
    chosen = table(sample, ["cluster_id", "pi", "design_weight", "selection_order"])
    assert sorted(chosen["selection_order"]) == list(range(1, SAMPLE_SIZE + 1))
    for pi, design_weight in zip(chosen["pi"], chosen["design_weight"]):
        assert design_weight == pytest.approx(1.0 / pi)
    assert set(chosen["cluster_id"]) <= set(rows["cluster_id"])


def test_model_clusters_then_selects_through_processing(demo_data):
    model = QgsProcessingModelAlgorithm()
    assert model.fromFile(str(MODEL))
    results = processing.run(
        model,
        {
            **model_inputs(demo_data),
            "cluster:psus": "TEMPORARY_OUTPUT",
            "select:sample": "TEMPORARY_OUTPUT",
            "select:frame": "TEMPORARY_OUTPUT",
        },
    )
    psus, frame = results["cluster:psus"], results["select:frame"]
    assert frame.featureCount() == psus.featureCount()
    check_sample(frame, results["select:sample"])


def test_model_runs_through_qgis_process(qgis_process_env, demo_data, tmp_path):
    outputs = {name: tmp_path / f"{name}.gpkg" for name in ("psus", "sample", "frame")}
    qgis_process_run(
        qgis_process_env,
        str(MODEL),
        {
            **model_inputs(demo_data),
            "cluster:psus": outputs["psus"],
            "select:sample": outputs["sample"],
            "select:frame": outputs["frame"],
        },
    )
    frame = QgsVectorLayer(str(outputs["frame"]), "frame", "ogr")
    sample = QgsVectorLayer(str(outputs["sample"]), "sample", "ogr")
    assert frame.isValid() and sample.isValid()
    check_sample(frame, sample)
