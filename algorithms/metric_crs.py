"""The projected CRS in metres in which distances are measured, and projecting into it.

Radii and neighbour distances are metres: a layer in degrees is projected to
the UTM zone of its centre (or to the CRS the user chose), with pyproj on
whole arrays, or point by point with QGIS when the project asks for a datum
transformation of its own.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsCoordinateTransformContext,
    QgsCsException,
    QgsPointXY,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsUnitTypes,
)

from .messages import EXAMPLE_IDS, id_examples, plural


def _is_metric(crs: QgsCoordinateReferenceSystem) -> bool:
    return (
        crs.isValid() and not crs.isGeographic() and crs.mapUnits() == QgsUnitTypes.DistanceMeters
    )


def choose_metric_crs(
    layer_crs: QgsCoordinateReferenceSystem,
    xy: np.ndarray,
    requested: QgsCoordinateReferenceSystem | None,
    transform_context: QgsCoordinateTransformContext,
    feedback: QgsProcessingFeedback | None = None,
) -> QgsCoordinateReferenceSystem:
    """The projected CRS in metres in which distances are measured.

    Rule: ``requested`` (DISTANCE_CRS) when set; otherwise the layer CRS when
    it is projected in metres; otherwise the UTM zone (WGS 84) of the centre
    of the data's bounding box.

    Raises
    ------
    QgsProcessingException
        No layer CRS; a requested CRS that is geographic or not in metres;
        coordinates that cannot be located on the globe (invalid or polar,
        where no UTM zone applies).
    """
    if not layer_crs.isValid():
        raise QgsProcessingException(
            "The input layer has no coordinate reference system, so distances cannot be "
            "measured. Set its CRS (Layer Properties > Source) or assign one with 'Assign "
            "projection'."
        )
    if requested is not None and requested.isValid():
        if not _is_metric(requested):
            raise QgsProcessingException(
                f"DISTANCE_CRS {requested.authid() or requested.description()} is not a projected "
                "CRS in metres. Choose one (e.g. the local UTM zone) or leave DISTANCE_CRS empty "
                "to pick one automatically."
            )
        return requested
    if _is_metric(layer_crs):
        return layer_crs

    from ..core.errors import ClusteringInputError
    from ..core.projection import utm_epsg_for_lonlat

    lonlat = lonlat_of_centre(layer_crs, xy, transform_context)
    try:
        epsg = utm_epsg_for_lonlat(*lonlat)
    except ClusteringInputError as error:
        raise QgsProcessingException(
            f"{error} Or choose a projected CRS in metres for DISTANCE_CRS."
        ) from None
    crs = QgsCoordinateReferenceSystem(f"EPSG:{epsg}")
    if not crs.isValid():
        raise QgsProcessingException(
            f"QGIS does not know EPSG:{epsg}, the UTM zone of the data. "
            "Choose a projected CRS in metres for DISTANCE_CRS."
        )
    if feedback is not None:
        feedback.pushInfo(
            f"Distances are measured in {crs.authid()} ({crs.description()}), the UTM zone "
            f"of the data centre ({lonlat[0]:.4f}, {lonlat[1]:.4f}). Set DISTANCE_CRS to "
            "use another CRS."
        )
    return crs


def lonlat_of_centre(
    layer_crs: QgsCoordinateReferenceSystem,
    xy: np.ndarray,
    transform_context: QgsCoordinateTransformContext,
) -> tuple[float, float]:
    """(lon, lat) in WGS 84 of the centre of the bounding box of ``xy``."""
    finite = np.isfinite(xy).all(axis=1)
    if not finite.any():
        raise QgsProcessingException("The input has no finite coordinates.")
    low = xy[finite].min(axis=0)
    high = xy[finite].max(axis=0)
    centre_x, centre_y = (low + high) / 2.0
    wgs84 = QgsCoordinateReferenceSystem("EPSG:4326")
    bad_location = QgsProcessingException(
        f"The data centre ({centre_x:g}, {centre_y:g}) in {layer_crs.authid() or 'the layer CRS'} "
        "cannot be located on the globe, so no metric CRS can be chosen. Check that the layer's "
        "CRS matches its coordinates (e.g. longitudes within ±180 and latitudes within ±90 for "
        "EPSG:4326), or choose a projected CRS in metres for DISTANCE_CRS."
    )
    try:
        point = QgsCoordinateTransform(layer_crs, wgs84, transform_context).transform(
            QgsPointXY(centre_x, centre_y)
        )
    except QgsCsException:
        raise bad_location from None
    lon, lat = point.x(), point.y()
    if not (math.isfinite(lon) and math.isfinite(lat) and -180 <= lon <= 180 and -90 <= lat <= 90):
        raise bad_location
    if layer_crs.isGeographic():
        # A geographic layer's own coordinates must be on the globe too.
        lon_low, lat_low = low
        lon_high, lat_high = high
        if lat_low < -90 or lat_high > 90 or lon_low < -360 or lon_high > 360:
            raise bad_location
    return lon, lat


def to_metric(
    xy: np.ndarray,
    layer_crs: QgsCoordinateReferenceSystem,
    metric_crs: QgsCoordinateReferenceSystem,
    transform_context: QgsCoordinateTransformContext,
    feature_ids: Sequence[int] | None = None,
) -> np.ndarray:
    """Project ``xy`` from ``layer_crs`` to ``metric_crs`` (a copy when they are equal).

    The whole array goes through one pyproj transformer (PROJ, as QGIS uses
    it); only when the project's transform context holds a datum
    transformation of its own for this pair of CRSs are the points
    transformed one by one with QGIS, so that the user's choice is honoured.

    Raises QgsProcessingException naming the features that cannot be projected.
    """
    if layer_crs == metric_crs:
        return np.array(xy, dtype=float)
    out = _to_metric_pyproj(xy, layer_crs, metric_crs, transform_context)
    if out is None:
        out = _to_metric_qgis(xy, layer_crs, metric_crs, transform_context)
    failed = np.flatnonzero(~np.isfinite(out).all(axis=1))
    if failed.size:
        ids = (
            [feature_ids[i] for i in failed[: EXAMPLE_IDS + 1].tolist()]
            if feature_ids is not None
            else failed[: EXAMPLE_IDS + 1].tolist()
        )
        raise QgsProcessingException(
            f"{plural(int(failed.size), 'feature')} cannot be projected from "
            f"{layer_crs.authid() or layer_crs.description()} to {metric_crs.authid()} "
            f"(feature ids {id_examples(ids)}). Check the layer's CRS and those coordinates, or "
            "choose a DISTANCE_CRS that covers the whole layer."
        )
    return out


def _to_metric_pyproj(
    xy: np.ndarray,
    layer_crs: QgsCoordinateReferenceSystem,
    metric_crs: QgsCoordinateReferenceSystem,
    transform_context: QgsCoordinateTransformContext,
) -> np.ndarray | None:
    """``xy`` projected with pyproj on whole arrays; None when QGIS must do it.

    Points that cannot be projected come back as NaN (or inf).
    """
    if transform_context.calculateCoordinateOperation(layer_crs, metric_crs):
        return None  # a transformation chosen in the project: only QGIS knows it
    try:
        from pyproj import CRS, Transformer
        from pyproj.exceptions import CRSError, ProjError

        wkt = QgsCoordinateReferenceSystem.WKT_PREFERRED
        transformer = Transformer.from_crs(
            CRS.from_wkt(layer_crs.toWkt(wkt)), CRS.from_wkt(metric_crs.toWkt(wkt)), always_xy=True
        )
    except (ImportError, CRSError, ProjError):
        return None
    xy = np.asarray(xy, dtype=float)
    out = np.empty_like(xy)
    # Blocks bound the temporary arrays pyproj makes.
    for start in range(0, xy.shape[0], 1_000_000):
        block = xy[start : start + 1_000_000]
        x, y = transformer.transform(block[:, 0], block[:, 1], errcheck=False)
        out[start : start + block.shape[0], 0] = x
        out[start : start + block.shape[0], 1] = y
    return out


def _to_metric_qgis(
    xy: np.ndarray,
    layer_crs: QgsCoordinateReferenceSystem,
    metric_crs: QgsCoordinateReferenceSystem,
    transform_context: QgsCoordinateTransformContext,
) -> np.ndarray:
    """``xy`` projected point by point with QGIS (NaN where it fails)."""
    transform = QgsCoordinateTransform(layer_crs, metric_crs, transform_context)
    out = np.empty_like(xy, dtype=float)
    for i, (x, y) in enumerate(xy.tolist()):
        try:
            point = transform.transform(x, y)
        except QgsCsException:
            out[i] = (math.nan, math.nan)
            continue
        out[i] = (point.x(), point.y())
    return out


def metres_in_layer_units(crs: QgsCoordinateReferenceSystem) -> float:
    """How many layer units make one metre (roughly, for degrees)."""
    if crs.isGeographic():
        return 1.0 / 111_320.0
    factor = QgsUnitTypes.fromUnitToUnitFactor(QgsUnitTypes.DistanceMeters, crs.mapUnits())
    return factor if math.isfinite(factor) and factor > 0 else 1.0
