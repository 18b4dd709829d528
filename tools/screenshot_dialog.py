"""Render the algorithm's Processing dialog offscreen to docs/dialog.png.

The input shown is the synthetic demo grid of tools/screenshot_result.py.

Run with the system Python (needs a GUI-enabled QgsApplication, so not in pytest):

    QT_QPA_PLATFORM=offscreen /usr/bin/python3 tools/screenshot_dialog.py [output.png]
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PLUGINS_DIR = REPO / ".build" / "plugins"
DEFAULT_OUTPUT = REPO / "docs" / "dialog.png"


def main(output: Path) -> None:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    PLUGINS_DIR.mkdir(parents=True, exist_ok=True)
    if not (PLUGINS_DIR / "tuned_grid_clustering").exists():
        (PLUGINS_DIR / "tuned_grid_clustering").symlink_to(REPO, target_is_directory=True)
    sys.path.insert(0, str(PLUGINS_DIR))
    sys.path.append("/usr/share/qgis/python/plugins")

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from qgis.core import QgsApplication, QgsProject

    app = QgsApplication([], True)
    app.initQgis()
    from processing.core.Processing import Processing

    Processing.initialize()
    from processing.gui.AlgorithmDialog import AlgorithmDialog

    import tuned_grid_clustering

    plugin = tuned_grid_clustering.classFactory(None)
    plugin.initProcessing()
    algorithm = QgsApplication.processingRegistry().createAlgorithmById(
        "gridsampling:tunedgridclustering"
    )
    # A layer in the project, so the dialog shows a filled-in example.
    from screenshot_result import synthetic_layer

    layer = synthetic_layer()
    QgsProject.instance().addMapLayer(layer)
    dialog = AlgorithmDialog(algorithm, False, None)
    dialog.setParameters({"INPUT": layer, "WEIGHT_FIELD": "population", "MAX_WEIGHT": 300})
    dialog.resize(1000, 820)
    dialog.show()
    for _ in range(20):
        app.processEvents()
    output.parent.mkdir(parents=True, exist_ok=True)
    if not dialog.grab().save(str(output)):
        raise SystemExit(f"could not write {output}")
    print(f"wrote {output}")
    dialog.close()
    QgsProject.instance().removeAllMapLayers()
    plugin.unload()
    app.exitQgis()


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_OUTPUT)
