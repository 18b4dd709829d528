"""Processing provider ``gridsampling`` ("Grid sampling")."""

from __future__ import annotations

import traceback
from pathlib import Path

from qgis.core import Qgis, QgsMessageLog, QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

ICON_PATH = Path(__file__).resolve().parents[1] / "icons" / "icon.svg"
LOG_TAG = "Tuned Grid Clustering"


class GridSamplingProvider(QgsProcessingProvider):
    """Holds the plugin's algorithms; ``loadAlgorithms`` always creates fresh instances."""

    def id(self) -> str:
        return "gridsampling"

    def name(self) -> str:
        return "Grid sampling"

    def longName(self) -> str:
        return "Grid sampling (Tuned Grid Clustering)"

    def icon(self) -> QIcon:
        return QIcon(str(ICON_PATH))

    def svgIconPath(self) -> str:
        return str(ICON_PATH)

    def loadAlgorithms(self) -> None:
        from ..algorithms.tuned_grid_clustering import TunedGridClusteringAlgorithm
        from ..algorithms.tuned_grid_clustering_raster import TunedGridClusteringRasterAlgorithm

        self.addAlgorithm(TunedGridClusteringAlgorithm())
        self.addAlgorithm(TunedGridClusteringRasterAlgorithm())
        self._add_select_psus()

    def _add_select_psus(self) -> None:
        # A broken or absent optional module must not take the provider down
        # with it: log and keep the other algorithms.
        module_name = f"{__package__.rsplit('.', 1)[0]}.algorithms.select_psus"
        try:
            from ..algorithms.select_psus import SelectPsusAlgorithm
        except ModuleNotFoundError as error:
            if error.name != module_name:  # the module exists but an import inside it fails
                QgsMessageLog.logMessage(
                    "Could not load Select PSUs:\n" + traceback.format_exc(), LOG_TAG, Qgis.Critical
                )
                return
            QgsMessageLog.logMessage(
                "Select PSUs is not available: algorithms/select_psus.py is missing.",
                LOG_TAG,
                Qgis.Warning,
            )
            return
        except Exception:  # noqa: BLE001 (reported in the log, provider keeps loading)
            QgsMessageLog.logMessage(
                "Could not load Select PSUs:\n" + traceback.format_exc(), LOG_TAG, Qgis.Critical
            )
            return
        self.addAlgorithm(SelectPsusAlgorithm())
