"""Colouring the outputs by cluster when Processing loads them into the project.

The styles are applied by a layer post-processor on the main thread, never
from the algorithm's background thread.
"""

from __future__ import annotations

import random
import zlib

from qgis.core import (
    QgsCategorizedSymbolRenderer,
    QgsProcessingContext,
    QgsProcessingLayerPostProcessorInterface,
    QgsRendererCategory,
    QgsSymbol,
    QgsVectorLayer,
    QgsWkbTypes,
)
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtGui import QColor

from .fields import UNIT_FIELD_ID


def cluster_colour(cluster_id: str) -> QColor:
    """A colour per cluster id: random-looking but the same on every run."""
    rng = random.Random(zlib.crc32(str(cluster_id).encode("utf-8")))
    return QColor.fromHsvF(rng.random(), 0.55 + 0.35 * rng.random(), 0.7 + 0.25 * rng.random())


def categorized_cluster_renderer(
    layer: QgsVectorLayer, field_name: str = UNIT_FIELD_ID, *, fill_opacity: float = 1.0
) -> QgsCategorizedSymbolRenderer:
    """A categorized renderer with one deterministic colour per value of ``field_name``."""
    index = layer.fields().lookupField(field_name)
    values = sorted({str(v) for v in layer.uniqueValues(index)}) if index >= 0 else []
    categories = []
    for value in values:
        symbol = QgsSymbol.defaultSymbol(layer.geometryType())
        colour = cluster_colour(value)
        symbol.setColor(colour)
        if layer.geometryType() == QgsWkbTypes.PolygonGeometry:
            fill = QColor(colour)
            fill.setAlphaF(fill_opacity)
            symbol_layer = symbol.symbolLayer(0)
            symbol_layer.setFillColor(fill)
            symbol_layer.setStrokeColor(colour.darker(150))
            symbol_layer.setStrokeWidth(0.4 if fill_opacity < 1 else 0.0)
        elif layer.geometryType() == QgsWkbTypes.PointGeometry:
            symbol.setSize(1.2)
            symbol.symbolLayer(0).setStrokeStyle(Qt.NoPen)  # dense grids stay readable
        categories.append(QgsRendererCategory(value, symbol, value))
    return QgsCategorizedSymbolRenderer(field_name, categories)


class ClusterStylePostProcessor(QgsProcessingLayerPostProcessorInterface):
    """Gives a layer loaded at the end of the run a categorized style by cluster id.

    Create instances with :meth:`create`. QGIS takes over the C++ object but
    not its Python half, and ``QgsProcessingAlgorithm.run()`` executes a
    temporary copy of the algorithm (``create()``), so a reference held by
    the running algorithm dies before the layer is loaded. The class keeps
    the most recent instances alive instead.
    """

    _alive: dict[int, ClusterStylePostProcessor] = {}
    _MAX_ALIVE = 256

    def __init__(self, field_name: str = UNIT_FIELD_ID, fill_opacity: float = 1.0) -> None:
        super().__init__()
        self.field_name = field_name
        self.fill_opacity = fill_opacity

    @classmethod
    def create(
        cls, field_name: str = UNIT_FIELD_ID, fill_opacity: float = 1.0
    ) -> ClusterStylePostProcessor:
        """A new post-processor, kept alive until ``_MAX_ALIVE`` newer ones exist."""
        processor = cls(field_name, fill_opacity)
        while len(cls._alive) >= cls._MAX_ALIVE:
            cls._alive.pop(next(iter(cls._alive)))
        cls._alive[id(processor)] = processor
        return processor

    def postProcessLayer(self, layer, context, feedback) -> None:  # noqa: ARG002 (QGIS API)
        if not isinstance(layer, QgsVectorLayer):
            return
        layer.setRenderer(
            categorized_cluster_renderer(layer, self.field_name, fill_opacity=self.fill_opacity)
        )
        layer.triggerRepaint()


def style_output_on_load(
    holder: list,
    context: QgsProcessingContext,
    dest_id: str,
    field_name: str = UNIT_FIELD_ID,
    fill_opacity: float = 1.0,
) -> None:
    """Style ``dest_id`` by cluster when QGIS loads it at the end of the run.

    ``holder`` (a list on the algorithm instance) also references the
    post-processor; see :class:`ClusterStylePostProcessor` for why that alone
    is not enough.
    """
    if not dest_id or not context.willLoadLayerOnCompletion(dest_id):
        return
    post_processor = ClusterStylePostProcessor.create(field_name, fill_opacity)
    holder.append(post_processor)
    context.layerToLoadOnCompletionDetails(dest_id).setPostProcessor(post_processor)
