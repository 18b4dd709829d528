"""Real QGIS, headless: QgsApplication, Processing and the plugin loaded as QGIS loads it.

With pytest-qgis installed (``/tmp/venvq``) its session ``QgsApplication`` is
used; without it (plain ``python3 -m pytest``) one is created here. Either
way ``processing`` is importable, ``Processing.initialize()`` has run, and the
plugin is loaded through ``classFactory(None).initProcessing()``, like
``qgis_process`` does.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = REPO.parent / "shared" / "data"
PLUGINS_DIR = REPO / ".build" / "plugins"
PROCESSING_PLUGINS = "/usr/share/qgis/python/plugins"
QGIS_PROCESS = "/usr/bin/qgis_process.bin"
ALGORITHM_ID = "gridsampling:tunedgridclustering"

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
if PROCESSING_PLUGINS not in sys.path:
    sys.path.append(PROCESSING_PLUGINS)
if str(PLUGINS_DIR) not in sys.path:
    sys.path.insert(0, str(PLUGINS_DIR))

_OWN_APP = None


def _application():
    """The running QgsApplication, or a new one without GUI."""
    global _OWN_APP
    from qgis.core import QgsApplication

    app = QgsApplication.instance()
    if app is None:
        # Never touch the user's QGIS profile (pytest-qgis uses .qgis-settings).
        os.environ.setdefault("QGIS_CUSTOM_CONFIG_PATH", tempfile.mkdtemp(prefix="tgc-qgis-"))
        _OWN_APP = QgsApplication([], False)
        _OWN_APP.initQgis()
        app = _OWN_APP
    return app


@pytest.fixture(scope="session", autouse=True)
def plugin():
    """The plugin, loaded as QGIS does: ``classFactory(None)`` then ``initProcessing()``."""
    _application()
    from processing.core.Processing import Processing

    Processing.initialize()
    import tuned_grid_clustering

    loaded = tuned_grid_clustering.classFactory(None)
    loaded.initProcessing()
    assert loaded.provider is not None, "the gridsampling provider could not be registered"
    yield loaded
    loaded.unload()
    if _OWN_APP is not None:
        _OWN_APP.exitQgis()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data; its absence is an error (CI and developer machines have it)."""
    if not SHARED_DATA.is_dir():
        raise RuntimeError(
            f"Test data folder {SHARED_DATA} is missing: it must sit beside the repository."
        )
    return SHARED_DATA


@pytest.fixture(scope="session")
def ph_points(shared_data: Path) -> str:
    path = shared_data / "ph_grid_points.gpkg"
    assert path.is_file(), f"missing {path}"
    return f"{path}|layername=grid_points"


@pytest.fixture(scope="session")
def ph_cells(shared_data: Path) -> str:
    path = shared_data / "ph_grid_cells.gpkg"
    assert path.is_file(), f"missing {path}"
    return f"{path}|layername=grid_cells"


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory) -> Path:
    """tools/make_demo_data.py's synthetic data (8,000 cells, 16 admin areas), made once."""
    from tuned_grid_clustering.test.qgis.helpers import make_demo_data

    return make_demo_data(tmp_path_factory.mktemp("demo"))


@pytest.fixture(scope="session")
def qgis_process_env(tmp_path_factory) -> dict:
    """Environment of ``tools/qgis_env.sh``, for running qgis_process.bin."""
    if not Path(QGIS_PROCESS).exists():
        raise RuntimeError(f"{QGIS_PROCESS} is missing; install qgis (Debian package).")
    config = tmp_path_factory.mktemp("qgis-config")
    script = f'export TGC_QGIS_CONFIG="{config}"; . "{REPO}/tools/qgis_env.sh" && env -0'
    output = subprocess.run(
        ["bash", "-c", script], check=True, capture_output=True, timeout=120
    ).stdout.decode()
    env = dict(item.split("=", 1) for item in output.split("\0") if "=" in item)
    assert env["QGIS_CUSTOM_CONFIG_PATH"] == str(config)
    return env


def memory_layer(geometry: str, crs: str, fields: list, rows: list, name: str = "units"):
    """A memory layer: ``fields`` as (name, QVariant type), ``rows`` as (wkt or None, [values])."""
    from qgis.core import QgsFeature, QgsField, QgsGeometry, QgsVectorLayer

    layer = QgsVectorLayer(f"{geometry}?crs={crs}", name, "memory")
    provider = layer.dataProvider()
    provider.addAttributes([QgsField(field_name, kind) for field_name, kind in fields])
    layer.updateFields()
    features = []
    for wkt, values in rows:
        feature = QgsFeature(layer.fields())
        if wkt is not None:
            feature.setGeometry(QgsGeometry.fromWkt(wkt))
        feature.setAttributes(list(values))
        features.append(feature)
    assert provider.addFeatures(features)
    assert layer.featureCount() == len(rows)
    return layer


def grid_rows(n_columns: int, n_rows: int, spacing: float, origin=(700_000.0, 900_000.0), seed=0):
    """Rows for :func:`memory_layer`: a regular grid of points with integer weights 1..9."""
    import numpy as np

    rng = np.random.default_rng(seed)
    rows = []
    for row in range(n_rows):
        for column in range(n_columns):
            x = origin[0] + column * spacing
            y = origin[1] + row * spacing
            rows.append((f"Point ({x} {y})", [len(rows), float(rng.integers(1, 10))]))
    return rows


# A 60 x 60 cell window of the ph grid (3,600 cells, weight 342): quick runs.
PH_WINDOW_FILTER = '"Lon" >= 125.5 AND "Lon" <= 125.55 AND "Lat" >= 7.85 AND "Lat" <= 7.9'
PH_WINDOW_SETTINGS = {"WEIGHT_FIELD": "population", "TARGET_WEIGHT": 30, "TARGET_RADIUS": 500}


@pytest.fixture(scope="session")
def ph_window(ph_points: str) -> str:
    """URI of a 3,600-point window of ph_grid_points (an OGR subset)."""
    return f"{ph_points}|subset={PH_WINDOW_FILTER}"


@pytest.fixture(scope="session")
def ph_window_settings() -> dict:
    return dict(PH_WINDOW_SETTINGS)


@pytest.fixture(scope="session")
def make_layer():
    """:func:`memory_layer`."""
    return memory_layer


@pytest.fixture(scope="session")
def make_grid_rows():
    """:func:`grid_rows`."""
    return grid_rows
