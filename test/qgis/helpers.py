"""What the QGIS tests share: running the algorithms, reading their outputs, test data.

Imported as ``tuned_grid_clustering.test.qgis.helpers`` (the repository is the
plugin package), after ``conftest.py`` has put Processing on ``sys.path``.
Fixtures (layers, the plugin, demo data) live in ``conftest.py``.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import processing
import pytest
from osgeo import gdal, osr
from qgis.core import (
    QgsProcessingAlgorithm,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsVectorLayer,
)

REPO = Path(__file__).resolve().parents[2]
QGIS_PROCESS = "/usr/bin/qgis_process.bin"
VECTOR_ALG = "gridsampling:tunedgridclustering"
RASTER_ALG = "gridsampling:tunedgridclusteringraster"
UTM_51N = "EPSG:32651"
# Few Optuna trials: quick runs.
FAST = {"INITIAL_TRIALS": 3, "SUBSEQUENT_TRIALS": 3}
NODATA = -99999.0


# ---------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------


def run(algorithm: str, parameters: dict, feedback: QgsProcessingFeedback | None = None) -> dict:
    """processing.run with temporary outputs unless given."""
    defaults = {"OUTPUT": "TEMPORARY_OUTPUT", "OUTPUT_CLUSTERS": "TEMPORARY_OUTPUT"}
    return processing.run(algorithm, {**defaults, **parameters}, feedback=feedback)


def expect_error(algorithm: str, parameters: dict, *phrases: str) -> str:
    """Run, expect a QgsProcessingException naming every phrase (any case), no traceback."""
    with pytest.raises(QgsProcessingException) as caught:
        run(algorithm, parameters)
    message = str(caught.value)
    for phrase in phrases:
        assert phrase.lower() in message.lower(), f"{phrase!r} not in {message!r}"
    assert "Traceback" not in message
    return message


class Recorder(QgsProcessingFeedback):
    """Feedback that keeps the messages: ``infos``, ``warnings`` and ``errors``."""

    def __init__(self):
        super().__init__()
        self.infos: list[str] = []
        self.warnings: list[str] = []
        self.errors: list[str] = []

    def pushInfo(self, info):
        self.infos.append(info)

    def pushWarning(self, warning):
        self.warnings.append(warning)

    def reportError(self, error, fatalError=False):
        self.errors.append(error)


def qgis_process(env: dict, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """``qgis_process.bin *args``; with ``check``, fail with its output unless it succeeds."""
    completed = subprocess.run(
        [QGIS_PROCESS, *args], env=env, capture_output=True, text=True, timeout=180
    )
    if check:
        assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    return completed


def qgis_process_run(env: dict, target: str, parameters: dict) -> dict:
    """``qgis_process.bin --json run target -- NAME=value...``: its whole JSON answer."""
    arguments = [f"{name}={value}" for name, value in parameters.items()]
    completed = qgis_process(env, "--json", "run", target, "--", *arguments)
    return json.loads(completed.stdout)


# ---------------------------------------------------------------------------
# Outputs
# ---------------------------------------------------------------------------


def table(layer: QgsVectorLayer, names: list[str]) -> dict[str, list]:
    """The values of fields ``names``, one list per field, in feature order."""
    columns: dict[str, list] = {name: [] for name in names}
    for feature in layer.getFeatures():
        for name in names:
            columns[name].append(feature[name])
    return columns


def flagged_parameters(algorithm: QgsProcessingAlgorithm, flag: int) -> set[str]:
    """Names of the parameters of ``algorithm`` that have ``flag`` (e.g. FlagAdvanced)."""
    return {p.name() for p in algorithm.parameterDefinitions() if p.flags() & flag}


def same_partition(a, b) -> bool:
    """True when labellings ``a`` and ``b`` group the units identically."""
    pairs = set(zip(a, b))
    return len(pairs) == len(set(a)) == len(set(b))


# ---------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------


def make_demo_data(folder: Path) -> Path:
    """tools/make_demo_data.py's synthetic data (8,000 cells, 16 admin areas) in ``folder``."""
    subprocess.run(
        ["/usr/bin/python3", str(REPO / "tools" / "make_demo_data.py"), str(folder)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return folder


def write_raster(
    path: Path,
    values: np.ndarray,
    geotransform: tuple,
    epsg: int = 32651,
    nodata: float | None = NODATA,
    data_type: int = gdal.GDT_Float32,
) -> str:
    """A one-band GeoTIFF of ``values`` (rows from the top)."""
    rows, cols = values.shape
    dataset = gdal.GetDriverByName("GTiff").Create(str(path), cols, rows, 1, data_type)
    dataset.SetGeoTransform(geotransform)
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(epsg)
    dataset.SetProjection(srs.ExportToWkt())
    band = dataset.GetRasterBand(1)
    if nodata is not None:
        band.SetNoDataValue(nodata)
    band.WriteArray(values)
    dataset = None
    return str(path)


def l_shaped_cells(n: int = 12, size: float = 100.0, origin=(700_000.0, 900_000.0)):
    """``(i, j, wkt)`` of n x n L-shaped polygons, each filling a cell of ``size``.

    Not rectangles, so not a grid of cells: the generic polygon paths.
    """
    half = size / 2
    for i in range(n):
        for j in range(n):
            x, y = origin[0] + i * size, origin[1] + j * size
            wkt = (
                f"Polygon (({x} {y}, {x + size} {y}, {x + size} {y + half}, {x + half} {y + half}, "
                f"{x + half} {y + size}, {x} {y + size}, {x} {y}))"
            )
            yield i, j, wkt
