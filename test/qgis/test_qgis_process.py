"""The algorithm and a model through ``qgis_process.bin`` (subprocess, tools/qgis_env.sh env)."""

from __future__ import annotations

import json
from pathlib import Path

from qgis.core import QgsVectorLayer

from tuned_grid_clustering.test.qgis.helpers import VECTOR_ALG, qgis_process, qgis_process_run

ALG = VECTOR_ALG
MODEL = Path(__file__).resolve().parent / "data" / "cluster_and_summarise.model3"


def feature_count(path: str) -> int:
    layer = QgsVectorLayer(path, "output", "ogr")
    assert layer.isValid(), path
    return layer.featureCount()


def test_algorithm_is_listed(qgis_process_env):
    listing = json.loads(qgis_process(qgis_process_env, "--json", "list").stdout)
    provider = listing["providers"]["gridsampling"]
    assert provider["name"] == "Grid sampling"
    assert ALG in provider["algorithms"]


def test_run_algorithm(qgis_process_env, ph_window, ph_window_settings, tmp_path):
    output = tmp_path / "units.gpkg"
    clusters = tmp_path / "clusters.gpkg"
    report = tmp_path / "report.html"
    answer = qgis_process_run(
        qgis_process_env,
        ALG,
        {
            "INPUT": ph_window,
            **ph_window_settings,
            "INITIAL_TRIALS": 3,
            "OUTPUT": output,
            "OUTPUT_CLUSTERS": clusters,
            "OUTPUT_REPORT": report,
        },
    )
    results = answer["results"]
    assert results["OUTPUT"] == str(output)
    assert feature_count(str(output)) == 3600
    assert feature_count(str(clusters)) == results["N_CLUSTERS"] > 5
    assert results["BEST_K"] >= 1
    assert report.is_file() and "<html" in report.read_text(encoding="utf-8")
    assert any("UTM zone" in line for line in answer["log"]["info"])


def test_bad_input_fails_with_the_message(qgis_process_env, ph_window, tmp_path):
    completed = qgis_process(
        qgis_process_env,
        "run",
        ALG,
        "--",
        f"INPUT={ph_window}",
        "TARGET_WEIGHT=0",
        "TARGET_RADIUS=500",
        f"OUTPUT={tmp_path / 'units.gpkg'}",
        f"OUTPUT_CLUSTERS={tmp_path / 'clusters.gpkg'}",
        check=False,
    )
    assert completed.returncode != 0
    assert "target cluster weight must be greater than 0" in completed.stdout + completed.stderr


def test_run_model_file(qgis_process_env, ph_window, ph_window_settings, tmp_path):
    units = tmp_path / "clustered.gpkg"
    summary = tmp_path / "summary.gpkg"
    answer = qgis_process_run(
        qgis_process_env,
        str(MODEL),
        {
            "units": ph_window,
            "target_weight": ph_window_settings["TARGET_WEIGHT"],
            "target_radius": ph_window_settings["TARGET_RADIUS"],
            "trials": 3,
            "share:clustered_units": units,
            "summarise:cluster_summary": summary,
        },
    )
    assert set(answer["results"]) >= {"share:clustered_units", "summarise:cluster_summary"}
    assert feature_count(str(units)) == 3600
    layer = QgsVectorLayer(str(summary), "summary", "ogr")
    cells = [f["cells"] for f in layer.getFeatures()]
    assert sum(cells) == 3600 and len(cells) > 5
