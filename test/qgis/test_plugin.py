"""Loading and unloading the plugin as QGIS does (headless and with a stub iface)."""

from __future__ import annotations

import configparser
from pathlib import Path

import pytest
from qgis.core import QgsApplication

import tuned_grid_clustering

REPO = Path(__file__).resolve().parents[2]
ALG = "gridsampling:tunedgridclustering"


def registry():
    return QgsApplication.processingRegistry()


def test_headless_load_registers_the_provider(plugin):
    provider = registry().providerById("gridsampling")
    assert provider is plugin.provider
    assert provider.name() == "Grid sampling"
    assert not provider.icon().isNull()
    assert Path(provider.svgIconPath()).is_file()
    assert registry().algorithmById(ALG) is not None


def test_load_algorithms_makes_fresh_instances(plugin):
    before = plugin.provider.algorithm("tunedgridclustering")
    address_before = id(before)
    plugin.provider.refreshAlgorithms()
    after = plugin.provider.algorithm("tunedgridclustering")
    assert after is not None and id(after) != address_before
    assert after.id() == ALG


def test_second_instance_does_not_replace_the_provider(plugin):
    other = tuned_grid_clustering.classFactory(None)
    other.initProcessing()
    other.initGui()  # iface None: nothing to add, must not fail
    assert other.provider is None
    other.unload()
    assert registry().providerById("gridsampling") is plugin.provider


def test_metadata_points_at_existing_icon():
    metadata = configparser.ConfigParser()
    metadata.read(REPO / "metadata.txt", encoding="utf-8")
    general = metadata["general"]
    assert general["hasProcessingProvider"] == "yes"
    assert (REPO / general["icon"]).is_file()


def test_gui_load_and_unload(plugin, request):
    pytest.importorskip("pytest_qgis", reason="the stub QGIS interface comes from pytest-qgis")
    iface = request.getfixturevalue("qgis_iface")
    plugin.unload()  # make room: one gridsampling provider at a time
    assert registry().providerById("gridsampling") is None
    gui = tuned_grid_clustering.classFactory(iface)
    try:
        gui.initGui()
        assert registry().providerById("gridsampling") is gui.provider
        assert gui.action is not None
        assert "Tuned Grid Clustering" in gui.action.text()
        assert not gui.action.icon().isNull()
        gui.unload()
        assert gui.action is None and gui.provider is None
        assert registry().providerById("gridsampling") is None
    finally:
        plugin.initProcessing()
    assert registry().algorithmById(ALG) is not None


MISSING_DEPENDENCIES_SCRIPT = r"""
import json, sys
# As if scipy and optuna were not installed: importing them fails and
# importlib.util.find_spec returns None.
for name in ("scipy", "optuna"):
    sys.modules[name] = None
sys.path.insert(0, sys.argv[1])
sys.path.append("/usr/share/qgis/python/plugins")
from qgis.core import QgsApplication, QgsProcessingException, QgsVectorLayer
app = QgsApplication([], False)
app.initQgis()
from processing.core.Processing import Processing
Processing.initialize()
import processing
import tuned_grid_clustering
plugin = tuned_grid_clustering.classFactory(None)
plugin.initProcessing()
alg = QgsApplication.processingRegistry().algorithmById("gridsampling:tunedgridclustering")
answer = {"registered": alg is not None}
if alg is not None:
    answer["can_execute"] = list(alg.canExecute())
    layer = QgsVectorLayer("Point?crs=EPSG:32651", "units", "memory")
    try:
        processing.run(alg.id(), {"INPUT": layer, "TARGET_WEIGHT": 1,
                                  "TARGET_RADIUS": 1, "OUTPUT": "TEMPORARY_OUTPUT",
                                  "OUTPUT_CLUSTERS": "TEMPORARY_OUTPUT"})
    except QgsProcessingException as error:
        answer["run_error"] = str(error)
answer["engine_imported"] = [m for m in ("scipy", "optuna") if sys.modules.get(m) is not None]
print("ANSWER" + json.dumps(answer))
"""


def test_loads_and_explains_without_scipy_and_optuna(tmp_path):
    import json
    import os
    import subprocess
    import sys

    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", QGIS_CUSTOM_CONFIG_PATH=str(tmp_path))
    completed = subprocess.run(
        [sys.executable, "-c", MISSING_DEPENDENCIES_SCRIPT, str(REPO / ".build" / "plugins")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = [line for line in completed.stdout.splitlines() if line.startswith("ANSWER")]
    assert lines, completed.stdout[-2000:] + completed.stderr[-3000:]
    answer = json.loads(lines[0][len("ANSWER") :])
    assert answer["registered"], "the algorithm must load without scipy and optuna"
    ok, message = answer["can_execute"]
    assert not ok
    for phrase in ("scipy", "apt install", "OSGeo4W", "macOS"):
        assert phrase in message
        assert phrase in answer["run_error"]
    # Optuna is optional: a missing optuna is not reported as a problem.
    assert "optuna" not in message and "optuna" not in answer["run_error"]
    assert answer["engine_imported"] == []
