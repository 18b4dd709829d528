"""QGIS plugin entry: registers the Processing provider and adds a toolbar/menu action."""

from __future__ import annotations

from qgis.core import Qgis, QgsApplication, QgsMessageLog

from .processing_provider.provider import ICON_PATH, GridSamplingProvider

ALGORITHM_ID = "gridsampling:tunedgridclustering"
MENU_NAME = "&Tuned Grid Clustering"


class TunedGridClusteringPlugin:
    """The object QGIS gets from ``classFactory``.

    Works headless (``iface`` None, e.g. ``qgis_process``): only
    ``initProcessing`` is called then, and it touches no GUI.
    """

    def __init__(self, iface) -> None:
        self.iface = iface
        self.provider: GridSamplingProvider | None = None
        self.action = None

    def initProcessing(self) -> None:
        """Register the ``gridsampling`` provider (once)."""
        if self.provider is not None:
            return
        provider = GridSamplingProvider()
        # addProvider deletes a provider whose id is already registered.
        if QgsApplication.processingRegistry().addProvider(provider):
            self.provider = provider
        else:
            QgsMessageLog.logMessage(
                "A 'gridsampling' Processing provider is already registered; not adding another.",
                "Tuned Grid Clustering",
                Qgis.Warning,
            )

    def initGui(self) -> None:
        """Register the provider and add a toolbar button and a Plugins-menu entry."""
        self.initProcessing()
        if self.iface is None:
            return
        from qgis.PyQt.QtGui import QIcon
        from qgis.PyQt.QtWidgets import QAction

        self.action = QAction(
            QIcon(str(ICON_PATH)), "Tuned Grid Clustering…", self.iface.mainWindow()
        )
        self.action.setObjectName("tunedGridClusteringAction")
        self.action.setToolTip("Group weighted grid cells into survey clusters (PSUs)")
        self.action.triggered.connect(self.open_dialog)
        self.iface.addToolBarIcon(self.action)
        self.iface.addPluginToMenu(MENU_NAME, self.action)

    def open_dialog(self) -> None:
        """Open the Tuned Grid Clustering dialog of Processing."""
        import processing

        processing.execAlgorithmDialog(ALGORITHM_ID)

    def unload(self) -> None:
        """Remove the action, the menu entry and the provider."""
        if self.action is not None and self.iface is not None:
            self.iface.removeToolBarIcon(self.action)
            self.iface.removePluginMenu(MENU_NAME, self.action)
            self.action.deleteLater()
        self.action = None
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
        self.provider = None
