"""The clustering engine: pure Python, never imports QGIS.

Public API::

    from tuned_grid_clustering.core import TunedClustering
    result = TunedClustering(desired_cluster_weight=240, desired_cluster_radius=1000).fit(xy, w)

``xy`` must be in metres; :func:`project_to_metric` and :func:`metric_crs_for`
pick and apply a suitable projection (UTM) for geographic coordinates.

Names are imported on first use, so that ``core.dependencies`` and
``core.errors`` stay importable (and the plugin can explain what to install)
when a third-party package is missing.
"""

from __future__ import annotations

import importlib
from typing import Any

from .errors import ClusteringCancelled, ClusteringInputError

_LAZY = {
    "ClusteringResult": ".tuned",
    "TunedClustering": ".tuned",
    "metric_crs_for": ".projection",
    "project_to_metric": ".projection",
    "utm_epsg_for_lonlat": ".projection",
}

__all__ = ["ClusteringCancelled", "ClusteringInputError", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
