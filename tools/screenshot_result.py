"""Cluster the synthetic demo grid and render the result to docs/result.png.

Run with the system Python:

    QT_QPA_PLATFORM=offscreen /usr/bin/python3 tools/screenshot_result.py [output.png]

The input is core.synthetic's deterministic population grid (invented
numbers, free to publish), as 3 arc-second points in EPSG:4326; the picture
shows the cluster polygons (union of grid cells) coloured by cluster_id over
the points, as the plugin styles them when QGIS loads the outputs.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PLUGINS_DIR = REPO / ".build" / "plugins"
DEFAULT_OUTPUT = REPO / "docs" / "result.png"
PARAMETERS = {
    "WEIGHT_FIELD": "population",
    "TARGET_WEIGHT": 150,
    "TARGET_RADIUS": 800,
    "MIN_WEIGHT": 110,
    "MAX_WEIGHT": 200,
    "BRIDGE_DISTANCE": 800,
    "MAX_PASSES": 5,
    "INITIAL_TRIALS": 30,
}


def prepare_paths() -> None:
    """Make ``tuned_grid_clustering`` and ``processing`` importable."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    PLUGINS_DIR.mkdir(parents=True, exist_ok=True)
    if not (PLUGINS_DIR / "tuned_grid_clustering").exists():
        (PLUGINS_DIR / "tuned_grid_clustering").symlink_to(REPO, target_is_directory=True)
    if str(PLUGINS_DIR) not in sys.path:
        sys.path.insert(0, str(PLUGINS_DIR))
    if "/usr/share/qgis/python/plugins" not in sys.path:
        sys.path.append("/usr/share/qgis/python/plugins")


def synthetic_layer(n_cells: int = 8000):
    """A memory point layer of the synthetic population grid (EPSG:4326)."""
    from qgis.core import QgsFeature, QgsField, QgsGeometry, QgsPointXY, QgsVectorLayer
    from qgis.PyQt.QtCore import QVariant

    from tuned_grid_clustering.core.synthetic import synthetic_population_grid

    grid = synthetic_population_grid(n_cells)
    layer = QgsVectorLayer("Point?crs=EPSG:4326", "synthetic population grid", "memory")
    layer.dataProvider().addAttributes(
        [QgsField("cell_id", QVariant.Int), QgsField("population", QVariant.Double)]
    )
    layer.updateFields()
    features = []
    for i, (lon, lat, population) in enumerate(
        zip(grid.lon.tolist(), grid.lat.tolist(), grid.population.tolist())
    ):
        feature = QgsFeature(layer.fields())
        feature.setGeometry(QgsGeometry.fromPointXY(QgsPointXY(lon, lat)))
        feature.setAttributes([i, population])
        features.append(feature)
    layer.dataProvider().addFeatures(features)
    layer.updateExtents()
    return layer


def render(layers, extent, output: Path, size=(1100, 900)) -> None:
    from qgis.core import QgsMapRendererParallelJob, QgsMapSettings
    from qgis.PyQt.QtCore import QSize
    from qgis.PyQt.QtGui import QColor

    settings = QgsMapSettings()
    settings.setLayers(layers)
    settings.setDestinationCrs(layers[0].crs())
    settings.setOutputSize(QSize(*size))
    settings.setBackgroundColor(QColor("white"))
    settings.setExtent(extent)
    job = QgsMapRendererParallelJob(settings)
    job.start()
    job.waitForFinished()
    output.parent.mkdir(parents=True, exist_ok=True)
    if not job.renderedImage().save(str(output)):
        raise SystemExit(f"could not write {output}")


def main(output: Path) -> None:
    prepare_paths()
    from qgis.core import (
        QgsApplication,
        QgsPalLayerSettings,
        QgsTextBufferSettings,
        QgsTextFormat,
        QgsVectorLayerSimpleLabeling,
    )
    from qgis.PyQt.QtGui import QColor

    app = QgsApplication([], False)
    app.initQgis()
    from processing.core.Processing import Processing

    Processing.initialize()
    import processing

    import tuned_grid_clustering
    from tuned_grid_clustering.algorithms.styling import categorized_cluster_renderer

    plugin = tuned_grid_clustering.classFactory(None)
    plugin.initProcessing()
    units = synthetic_layer()
    results = processing.run(
        "gridsampling:tunedgridclustering",
        {
            "INPUT": units,
            **PARAMETERS,
            "OUTPUT": "TEMPORARY_OUTPUT",
            "OUTPUT_CLUSTERS": "TEMPORARY_OUTPUT",
        },
    )
    points, clusters = results["OUTPUT"], results["OUTPUT_CLUSTERS"]
    points.setRenderer(categorized_cluster_renderer(points))
    clusters.setRenderer(categorized_cluster_renderer(clusters, fill_opacity=0.35))

    label = QgsPalLayerSettings()
    label.fieldName = "replace(\"cluster_id\", 'CLUSTER_', '')"
    label.isExpression = True
    text = QgsTextFormat()
    text.setSize(7)
    buffer = QgsTextBufferSettings()
    buffer.setEnabled(True)
    buffer.setColor(QColor("white"))
    text.setBuffer(buffer)
    label.setFormat(text)
    clusters.setLabeling(QgsVectorLayerSimpleLabeling(label))
    clusters.setLabelsEnabled(True)

    extent = clusters.extent()
    extent.scale(1.04)
    render([clusters, points], extent, output)
    print(
        f"wrote {output}: {units.featureCount()} cells, {results['N_CLUSTERS']} clusters "
        f"(best k {results['BEST_K']})"
    )
    plugin.unload()
    app.exitQgis()


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_OUTPUT)
