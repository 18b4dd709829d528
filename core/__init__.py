"""The clustering engine: pure Python, never imports QGIS.

Public API::

    from tuned_grid_clustering.core import TunedClustering
    result = TunedClustering(desired_cluster_weight=240, desired_cluster_radius=1000).fit(xy, w)

``xy`` must be in metres; :func:`project_to_metric` and :func:`metric_crs_for`
pick and apply a suitable projection (UTM) for geographic coordinates.
"""

from .errors import ClusteringCancelled, ClusteringInputError
from .projection import metric_crs_for, project_to_metric, utm_epsg_for_lonlat
from .tuned import ClusteringResult, TunedClustering

__all__ = [
    "ClusteringCancelled",
    "ClusteringInputError",
    "ClusteringResult",
    "TunedClustering",
    "metric_crs_for",
    "project_to_metric",
    "utm_epsg_for_lonlat",
]
