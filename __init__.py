"""Tuned Grid Clustering: a QGIS Processing plugin that builds survey PSUs.

Only ``classFactory`` lives here, and it imports lazily, so that a missing
third-party package shows a clear message in QGIS instead of a broken plugin.
"""


def classFactory(iface):  # noqa: N802 (QGIS's name)
    """Return the plugin instance; QGIS calls this when it loads the plugin."""
    from .plugin import TunedGridClusteringPlugin

    return TunedGridClusteringPlugin(iface)
