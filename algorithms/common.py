"""Helpers shared by the Processing algorithms: QGIS in, numpy arrays to core/, QGIS out.

Every algorithm is a thin adapter built from these steps:

1. :func:`check_targets` / :func:`require_dependencies` validate parameters
   and installed packages with messages that name the fix.
2. :func:`read_units` reads the input features once: a representative point
   per feature (the point itself; a polygon's point-on-surface), weights and
   any extra attributes, and rejects bad input with a helpful
   ``QgsProcessingException``.
3. :func:`choose_metric_crs` and :func:`to_metric` pick the CRS in metres in
   which distances are measured and project the points into it.
4. The algorithm calls core/ (imported lazily, inside ``processAlgorithm``)
   inside :func:`core_errors_as_processing_exceptions`, with a
   :class:`CoreProgress` bridge for progress and cancellation.
5. :class:`ClusterAssignment` reshapes core's result;
   :func:`write_units_with_clusters` copies every input feature with its
   cluster, :func:`cluster_polygons` builds one polygon per cluster (dissolve,
   grid cells or convex hull) and :func:`write_cluster_polygons` writes them;
   :func:`style_output_on_load` colours loaded outputs by cluster and
   :func:`write_report` writes the HTML report (core.report).

Nothing here touches ``iface`` or ``QgsProject.instance()``: all of it runs
in Processing's background thread. Only ``numpy`` (shipped with QGIS) and
core's light modules (``errors``, ``dependencies``) are imported at the top;
the engine is imported inside ``processAlgorithm``, so the plugin loads and
explains itself when scikit-learn or optuna is missing.
"""

from __future__ import annotations

import math
import random
import zlib
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
from qgis.core import (
    QgsCategorizedSymbolRenderer,
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsCoordinateTransformContext,
    QgsCsException,
    QgsDistanceArea,
    QgsFeature,
    QgsFeatureIterator,
    QgsFeatureRequest,
    QgsFeatureSink,
    QgsFeatureSource,
    QgsField,
    QgsFields,
    QgsGeometry,
    QgsPointXY,
    QgsProcessingAlgorithm,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeatureSource,
    QgsProcessingFeedback,
    QgsProcessingLayerPostProcessorInterface,
    QgsRectangle,
    QgsRendererCategory,
    QgsSymbol,
    QgsUnitTypes,
    QgsVectorLayer,
    QgsWkbTypes,
)
from qgis.PyQt.QtCore import Qt, QVariant
from qgis.PyQt.QtGui import QColor

from ..core.dependencies import install_instructions, missing_packages

# Fields added to every input feature in OUTPUT.
UNIT_FIELD_ID = "cluster_id"
UNIT_FIELD_WEIGHT = "cluster_weight"
UNIT_FIELD_RADIUS = "cluster_radius_m"
UNIT_FIELD_PASS = "cluster_pass"

# Suffix given to an input field whose name clashes with a field we add.
CLASH_SUFFIX = "_input"

# A hull of collinear or coincident points is buffered by this many metres
# (converted to layer units) so that every cluster gets a polygon.
DEGENERATE_HULL_BUFFER_M = 1.0

# Points count as a regular grid when every coordinate lies within this
# fraction of a cell of a grid node ...
GRID_TOLERANCE = 0.1
# ... and at least this share of the points has a neighbouring grid point.
GRID_MIN_ADJACENT_SHARE = 0.5

# How many feature ids an error message lists as examples.
_EXAMPLE_IDS = 5


# ---------------------------------------------------------------------------
# Dependencies and parameters
# ---------------------------------------------------------------------------


def dependencies_problem() -> str | None:
    """Install instructions if a third-party package core needs is missing, else None."""
    missing = missing_packages()
    return install_instructions(missing) if missing else None


def require_dependencies() -> None:
    """Raise QgsProcessingException with install instructions if a package is missing."""
    problem = dependencies_problem()
    if problem:
        raise QgsProcessingException(problem)


def optional_number(parameters: dict, name: str) -> float | None:
    """Value of an optional number parameter, or None when it is not set."""
    value = parameters.get(name)
    if value is None or value == "":
        return None
    if isinstance(value, QVariant) and value.isNull():
        return None
    return value


def check_targets(
    target_weight: float, target_radius: float, max_weight: float | None = None
) -> str | None:
    """Message for invalid target/maximum weights and radius, or None when they are fine."""
    if not target_weight > 0:
        return (
            f"The target cluster weight must be greater than 0 (got {target_weight:g}). "
            "Set TARGET_WEIGHT to the weight one cluster should reach, e.g. 240 people."
        )
    if not target_radius > 0:
        return (
            f"The target cluster radius must be greater than 0 metres (got {target_radius:g}). "
            "Set TARGET_RADIUS to the radius a cluster should have, e.g. 1000 m."
        )
    if max_weight is not None and max_weight < target_weight:
        return (
            f"The maximum cluster weight ({max_weight:g}) is below the target weight "
            f"({target_weight:g}). Set MAX_WEIGHT to at least the target weight, "
            "or leave it empty to skip the extra passes."
        )
    return None


# ---------------------------------------------------------------------------
# Reading units
# ---------------------------------------------------------------------------


@dataclass
class Units:
    """The input features as arrays, in input order.

    Attributes
    ----------
    feature_ids : list of int
        Feature id per unit (to find the unit again when writing).
    xy : ndarray of shape (n, 2)
        Representative point per unit, in ``crs``.
    weights : ndarray of shape (n,) or None
        Weight per unit; None when no weight field was given (each weighs 1).
    is_polygon : bool
        True for polygon input (points are points-on-surface).
    crs : QgsCoordinateReferenceSystem
        CRS of the input layer.
    fields : QgsFields
        Fields of the input layer.
    wkb_type : int
        Geometry type of the input layer.
    extra : dict of str to list
        Values of the ``extra_fields`` asked for, per unit.
    n_centroid_fallbacks : int
        Polygons whose point-on-surface could not be computed (invalid
        geometry) and which are represented by their centroid instead.
    """

    feature_ids: list[int]
    xy: np.ndarray
    weights: np.ndarray | None
    is_polygon: bool
    crs: QgsCoordinateReferenceSystem
    fields: QgsFields
    wkb_type: int
    extra: dict[str, list] = field(default_factory=dict)
    n_centroid_fallbacks: int = 0

    @property
    def n(self) -> int:
        return len(self.feature_ids)

    @property
    def weights_or_ones(self) -> np.ndarray:
        return self.weights if self.weights is not None else np.ones(self.n)

    def index_by_feature_id(self) -> dict[int, int] | None:
        """Map feature id -> unit index; None if some source repeats feature ids."""
        index = {fid: i for i, fid in enumerate(self.feature_ids)}
        return index if len(index) == self.n else None


def _examples(ids: Sequence[int]) -> str:
    shown = ", ".join(str(fid) for fid in ids[:_EXAMPLE_IDS])
    return shown + (", …" if len(ids) > _EXAMPLE_IDS else "")


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" + ("" if count == 1 else "s")


def _have(ids: Sequence[int]) -> str:
    """ "1 feature has" / "3 features have"."""
    return _plural(len(ids), "feature") + (" has" if len(ids) == 1 else " have")


def check_weight_field(fields: QgsFields, weight_field: str) -> int:
    """Index of ``weight_field``; QgsProcessingException if it is missing or not numeric."""
    index = fields.lookupField(weight_field)
    numeric = [f.name() for f in fields if f.isNumeric()]
    if index < 0:
        raise QgsProcessingException(
            f"The weight field '{weight_field}' is not in the input layer. "
            f"Pick one of its numeric fields ({', '.join(numeric) or 'none'}), "
            "or leave WEIGHT_FIELD empty to give every feature weight 1."
        )
    if not fields.at(index).isNumeric():
        raise QgsProcessingException(
            f"The weight field '{weight_field}' holds {fields.at(index).typeName()} values, "
            "not numbers. Pick a numeric field, or convert this one with the Field calculator "
            f'(e.g. a new decimal field = to_real("{weight_field}")).'
        )
    return index


def representative_point(geometry: QgsGeometry, is_polygon: bool) -> tuple[QgsPointXY | None, bool]:
    """A point standing for the feature, and whether the centroid fallback was used.

    Points give themselves (a multipoint its centroid). Polygons give their
    point-on-surface, a point guaranteed to lie inside the polygon even when
    it is concave; an invalid polygon for which GEOS cannot compute it falls
    back to its centroid, then to its bounding-box centre.
    """
    if not is_polygon:
        if geometry.isMultipart():
            parts = geometry.asMultiPoint()
            if len(parts) == 1:
                return QgsPointXY(parts[0]), False
            return geometry.centroid().asPoint(), False
        return geometry.asPoint(), False
    surface_point = geometry.pointOnSurface()
    if not surface_point.isNull() and not surface_point.isEmpty():
        return surface_point.asPoint(), False
    centroid = geometry.centroid()
    if not centroid.isNull() and not centroid.isEmpty():
        return centroid.asPoint(), True
    box = geometry.boundingBox()
    if box.isNull() or not math.isfinite(box.xMinimum()):
        return None, True
    return box.center(), True


def read_units(
    source: QgsFeatureSource,
    weight_field: str | None,
    feedback: QgsProcessingFeedback,
    *,
    extra_fields: Iterable[str] = (),
    progress_span: tuple[float, float] = (0.0, 10.0),
) -> Units:
    """Read every feature of ``source`` as a unit: representative point, weight, extras.

    Geometry validity checks of the context are skipped on purpose, so that
    no feature is dropped: invalid but usable polygons still get a point.

    Raises
    ------
    QgsProcessingException
        Empty layer; null or empty geometries; a missing or text weight field;
        NULL, NaN or negative weights. Each message counts the offending
        features, lists some feature ids and names a fix.
    """
    if source is None:
        raise QgsProcessingException("The input layer could not be opened. Check INPUT.")
    geometry_type = QgsWkbTypes.geometryType(source.wkbType())
    if geometry_type not in (QgsWkbTypes.PointGeometry, QgsWkbTypes.PolygonGeometry):
        raise QgsProcessingException(
            "The input layer must hold points or polygons, not "
            f"{QgsWkbTypes.displayString(source.wkbType())}. "
            "Convert it first (e.g. Centroids or Polygonize)."
        )
    is_polygon = geometry_type == QgsWkbTypes.PolygonGeometry
    fields = source.fields()
    weight_index = check_weight_field(fields, weight_field) if weight_field else -1
    extra_fields = list(extra_fields)
    extra_indices = []
    for name in extra_fields:
        index = fields.lookupField(name)
        if index < 0:
            raise QgsProcessingException(f"The field '{name}' is not in the input layer.")
        extra_indices.append(index)

    request = QgsFeatureRequest()
    request.setSubsetOfAttributes([i for i in [weight_index, *extra_indices] if i >= 0])
    total = source.featureCount()
    start, end = progress_span
    step = (end - start) / total if total and total > 0 else 0.0

    feature_ids: list[int] = []
    xs: list[float] = []
    ys: list[float] = []
    weights: list[float] = []
    extra: dict[str, list] = {name: [] for name in extra_fields}
    null_geometry_ids: list[int] = []
    null_weight_ids: list[int] = []
    negative_weight_ids: list[int] = []
    n_fallbacks = 0
    for count, feature in enumerate(_all_features(source, request)):
        if count % 1000 == 0:
            if feedback.isCanceled():
                raise QgsProcessingException("Cancelled.")
            feedback.setProgress(start + count * step)
        fid = feature.id()
        feature_ids.append(fid)
        geometry = feature.geometry()
        point = None
        if not geometry.isNull() and not geometry.isEmpty():
            point, fell_back = representative_point(geometry, is_polygon)
            n_fallbacks += fell_back
        if point is None:
            null_geometry_ids.append(fid)
            xs.append(math.nan)
            ys.append(math.nan)
        else:
            xs.append(point.x())
            ys.append(point.y())
        if weight_index >= 0:
            value = feature.attribute(weight_index)
            weight = _as_float(value)
            if weight is None or not math.isfinite(weight):
                null_weight_ids.append(fid)
                weight = math.nan
            elif weight < 0:
                negative_weight_ids.append(fid)
            weights.append(weight)
        for name, index in zip(extra_fields, extra_indices):
            extra[name].append(feature.attribute(index))

    if not feature_ids:
        raise QgsProcessingException(
            "The input layer has no features (or none is selected while 'Selected features "
            "only' is ticked). Choose a layer with points or polygons to cluster."
        )
    if null_geometry_ids:
        raise QgsProcessingException(
            f"{_have(null_geometry_ids)} a null or empty geometry (out of {len(feature_ids)}; "
            f"feature ids {_examples(null_geometry_ids)}). Every feature needs a location: "
            "run 'Remove null geometries' on the layer first (or fix those geometries)."
        )
    if null_weight_ids:
        raise QgsProcessingException(
            f"{_have(null_weight_ids)} a NULL or non-numeric weight in '{weight_field}' "
            f"(feature ids {_examples(null_weight_ids)}). Fill them, e.g. with the Field "
            f'calculator: coalesce("{weight_field}", 0), or remove those features '
            f'(Extract by expression: "{weight_field}" IS NOT NULL).'
        )
    if negative_weight_ids:
        raise QgsProcessingException(
            f"{_have(negative_weight_ids)} a negative weight in '{weight_field}' "
            f"(feature ids {_examples(negative_weight_ids)}). Weights must be 0 or more: set "
            f'them to 0 (Field calculator: max("{weight_field}", 0)) or remove those features '
            f'(Extract by expression: "{weight_field}" >= 0).'
        )
    if n_fallbacks:
        feedback.pushWarning(
            f"{_plural(n_fallbacks, 'polygon')}: no point-on-surface could be computed "
            "(invalid geometry); the centroid stands for them. Consider 'Fix geometries'."
        )
    feedback.setProgress(end)
    return Units(
        feature_ids=feature_ids,
        xy=np.column_stack([np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)]),
        weights=np.asarray(weights, dtype=float) if weight_index >= 0 else None,
        is_polygon=is_polygon,
        crs=source.sourceCrs(),
        fields=fields,
        wkb_type=source.wkbType(),
        extra=extra,
        n_centroid_fallbacks=n_fallbacks,
    )


def _all_features(source: QgsFeatureSource, request: QgsFeatureRequest) -> QgsFeatureIterator:
    """Iterate ``source`` without the context's invalid-geometry filter: no feature is lost."""
    if isinstance(source, QgsProcessingFeatureSource):
        return source.getFeatures(
            request, QgsProcessingFeatureSource.FlagSkipGeometryValidityChecks
        )
    return source.getFeatures(request)


def _as_float(value: Any) -> float | None:
    if value is None or (isinstance(value, QVariant) and value.isNull()):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


# ---------------------------------------------------------------------------
# Metric CRS
# ---------------------------------------------------------------------------


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

    Raises QgsProcessingException naming the features that cannot be projected.
    """
    if layer_crs == metric_crs:
        return np.array(xy, dtype=float)
    transform = QgsCoordinateTransform(layer_crs, metric_crs, transform_context)
    out = np.empty_like(xy, dtype=float)
    failed: list[int] = []
    for i, (x, y) in enumerate(xy.tolist()):
        try:
            point = transform.transform(x, y)
        except QgsCsException:
            out[i] = (math.nan, math.nan)
            failed.append(i)
            continue
        out[i] = (point.x(), point.y())
    failed.extend(np.flatnonzero(~np.isfinite(out).all(axis=1)).tolist())
    if failed:
        failed = sorted(set(failed))
        ids = [feature_ids[i] for i in failed] if feature_ids is not None else failed
        raise QgsProcessingException(
            f"{_plural(len(failed), 'feature')} cannot be projected from "
            f"{layer_crs.authid() or layer_crs.description()} to {metric_crs.authid()} "
            f"(feature ids {_examples(ids)}). Check the layer's CRS and those coordinates, or "
            "choose a DISTANCE_CRS that covers the whole layer."
        )
    return out


def metres_in_layer_units(crs: QgsCoordinateReferenceSystem) -> float:
    """How many layer units make one metre (roughly, for degrees)."""
    if crs.isGeographic():
        return 1.0 / 111_320.0
    factor = QgsUnitTypes.fromUnitToUnitFactor(QgsUnitTypes.DistanceMeters, crs.mapUnits())
    return factor if math.isfinite(factor) and factor > 0 else 1.0


# ---------------------------------------------------------------------------
# Progress and cancellation bridge to core
# ---------------------------------------------------------------------------


class CoreProgress:
    """Callables for core's ``progress`` and ``is_cancelled`` arguments.

    Maps core's fraction (0..1) onto ``span`` percent of the Processing
    progress bar, and logs every new message once.
    """

    def __init__(self, feedback: QgsProcessingFeedback, span: tuple[float, float]) -> None:
        self.feedback = feedback
        self.start, self.end = span
        self._last_message: str | None = None

    def __call__(self, fraction: float, message: str | None = None) -> None:
        fraction = min(max(float(fraction), 0.0), 1.0)
        self.feedback.setProgress(self.start + fraction * (self.end - self.start))
        if message and message != self._last_message:
            self._last_message = message
            self.feedback.pushInfo(message)

    def is_cancelled(self) -> bool:
        return self.feedback.isCanceled()


@contextmanager
def core_errors_as_processing_exceptions() -> Iterator[None]:
    """Turn core's ClusteringInputError / ClusteringCancelled into QgsProcessingException.

    The message is kept (it names the problem and the fix); no traceback.
    """
    from ..core.errors import ClusteringCancelled, ClusteringInputError

    try:
        yield
    except ClusteringInputError as error:
        raise QgsProcessingException(str(error)) from None
    except ClusteringCancelled:
        raise QgsProcessingException("Cancelled.") from None


# ---------------------------------------------------------------------------
# Output fields and features
# ---------------------------------------------------------------------------


@dataclass
class ClusterAssignment:
    """core's result in the shape the outputs need (plain Python lists, one code per unit).

    Attributes
    ----------
    codes : ndarray of shape (n,), int
        Row of the cluster table each unit belongs to.
    unit_cluster_ids, unit_pass : list
        Cluster id and pass per unit.
    cluster_ids, weight, radius_m, n_units, passes : list
        One entry per cluster (row of ``result.clusters``).
    """

    codes: np.ndarray
    unit_cluster_ids: list[str]
    unit_pass: list[int]
    cluster_ids: list[str]
    weight: list[float]
    radius_m: list[float]
    n_units: list[int]
    passes: list[int]

    @classmethod
    def from_result(cls, result: Any) -> ClusterAssignment:
        """From a core ``ClusteringResult`` (``labels`` index rows of ``clusters``)."""
        clusters = result.clusters.reset_index(drop=True)
        return cls(
            codes=np.asarray(result.labels, dtype=np.int64),
            unit_cluster_ids=[str(c) for c in result.cluster_ids],
            unit_pass=np.asarray(result.cluster_pass).astype(int).tolist(),
            cluster_ids=[str(c) for c in clusters["cluster_id"]],
            weight=clusters["weight"].astype(float).tolist(),
            radius_m=clusters["radius_m"].astype(float).tolist(),
            n_units=clusters["n_units"].astype(int).tolist(),
            passes=clusters["pass"].astype(int).tolist(),
        )

    @property
    def n_clusters(self) -> int:
        return len(self.cluster_ids)

    def unit_values(self, index: int) -> list:
        """Values of :func:`unit_cluster_fields` for unit ``index``."""
        code = self.codes[index]
        return [
            self.unit_cluster_ids[index],
            self.weight[code],
            self.radius_m[code],
            self.unit_pass[index],
        ]

    def cluster_rows(self) -> list[dict]:
        """Attributes per cluster, keyed like :func:`cluster_output_fields` (but area_km2)."""
        return [
            {
                "cluster_id": self.cluster_ids[code],
                "weight": self.weight[code],
                "radius_m": self.radius_m[code],
                "n_units": self.n_units[code],
                "pass": self.passes[code],
            }
            for code in range(self.n_clusters)
        ]


def write_units_with_clusters(
    algorithm: QgsProcessingAlgorithm,
    parameters: dict,
    output_name: str,
    context: QgsProcessingContext,
    feedback: QgsProcessingFeedback,
    source: QgsFeatureSource,
    units: Units,
    assignment: ClusterAssignment,
    progress_span: tuple[float, float] = (90.0, 95.0),
) -> tuple[str, WrittenUnits]:
    """Create the ``output_name`` sink and write every input feature with its cluster.

    Returns the destination id and what :func:`write_unit_features` collected
    (member polygons for the dissolve).
    """
    fields, renamed = unit_output_fields(units.fields, unit_cluster_fields())
    for old, new in renamed:
        feedback.pushWarning(f"The input field '{old}' is kept as '{new}' in {output_name}.")
    sink, dest_id = algorithm.parameterAsSink(
        parameters, output_name, context, fields, units.wkb_type, units.crs
    )
    if sink is None:
        raise QgsProcessingException(algorithm.invalidSinkError(parameters, output_name))
    written = write_unit_features(
        source,
        units,
        sink,
        fields,
        assignment.unit_values,
        feedback,
        collect_geometries_for=assignment.codes if units.is_polygon else None,
        progress_span=progress_span,
    )
    written.renamed_fields = renamed
    del sink  # flushes file outputs
    return dest_id, written


def write_cluster_polygons(
    algorithm: QgsProcessingAlgorithm,
    parameters: dict,
    output_name: str,
    context: QgsProcessingContext,
    polygons: Sequence[QgsGeometry],
    assignment: ClusterAssignment,
    crs: QgsCoordinateReferenceSystem,
) -> str:
    """Create the ``output_name`` sink (MultiPolygon, :func:`cluster_output_fields`) and fill it."""
    fields = cluster_output_fields()
    sink, dest_id = algorithm.parameterAsSink(
        parameters, output_name, context, fields, QgsWkbTypes.MultiPolygon, crs
    )
    if sink is None:
        raise QgsProcessingException(algorithm.invalidSinkError(parameters, output_name))
    write_cluster_features(
        sink, fields, assignment.cluster_rows(), polygons, area_calculator(crs, context)
    )
    del sink
    return dest_id


def unit_cluster_fields() -> QgsFields:
    """The fields added to every input feature in OUTPUT."""
    fields = QgsFields()
    fields.append(QgsField(UNIT_FIELD_ID, QVariant.String))
    fields.append(QgsField(UNIT_FIELD_WEIGHT, QVariant.Double))
    fields.append(QgsField(UNIT_FIELD_RADIUS, QVariant.Double))
    fields.append(QgsField(UNIT_FIELD_PASS, QVariant.Int))
    return fields


def unit_output_fields(
    input_fields: QgsFields, added: QgsFields
) -> tuple[QgsFields, list[tuple[str, str]]]:
    """Input fields followed by ``added``; input fields whose names clash are renamed.

    The added fields always keep their documented names (models and scripts
    rely on ``cluster_id``); an input field with the same name (compared
    case-insensitively, as GeoPackage and Shapefile do) becomes
    ``<name>_input`` (``<name>_input_2``, ... if that is taken too). Values
    are kept.

    Returns
    -------
    fields, renamed
        The output fields and the list of (old name, new name).
    """
    taken = {f.name().lower() for f in input_fields} | {f.name().lower() for f in added}
    out = QgsFields()
    renamed: list[tuple[str, str]] = []
    added_names = {f.name().lower() for f in added}
    for input_field in input_fields:
        copy = QgsField(input_field)
        if input_field.name().lower() in added_names:
            new_name = input_field.name() + CLASH_SUFFIX
            counter = 2
            while new_name.lower() in taken:
                new_name = f"{input_field.name()}{CLASH_SUFFIX}_{counter}"
                counter += 1
            taken.add(new_name.lower())
            copy.setName(new_name)
            renamed.append((input_field.name(), new_name))
        out.append(copy)
    for added_field in added:
        out.append(QgsField(added_field))
    return out, renamed


def cluster_output_fields() -> QgsFields:
    """Fields of OUTPUT_CLUSTERS."""
    fields = QgsFields()
    fields.append(QgsField("cluster_id", QVariant.String))
    fields.append(QgsField("weight", QVariant.Double))
    fields.append(QgsField("radius_m", QVariant.Double))
    fields.append(QgsField("n_units", QVariant.Int))
    fields.append(QgsField("area_km2", QVariant.Double))
    fields.append(QgsField("pass", QVariant.Int))
    return fields


def write_unit_features(
    source: QgsFeatureSource,
    units: Units,
    sink: QgsFeatureSink,
    output_fields: QgsFields,
    added_values: Callable[[int], list],
    feedback: QgsProcessingFeedback,
    *,
    collect_geometries_for: np.ndarray | None = None,
    progress_span: tuple[float, float] = (90.0, 95.0),
) -> WrittenUnits:
    """Copy every input feature to ``sink`` with ``added_values(unit_index)`` appended.

    Parameters
    ----------
    added_values : callable
        Unit index -> values of the added fields.
    collect_geometries_for : ndarray of int, optional
        A cluster code per unit; when given, the input geometries are also
        returned grouped by code (used to dissolve polygons per cluster).

    Returns
    -------
    WrittenUnits

    Raises
    ------
    QgsProcessingException
        When the written count differs from the input count (a feature would
        be lost), or the sink rejects a feature.
    """
    index_of = units.index_by_feature_id()
    seen = np.zeros(units.n, dtype=bool)
    geometries: dict[int, list[QgsGeometry]] = {}
    start, end = progress_span
    step = (end - start) / max(units.n, 1)
    written = 0
    collect = collect_geometries_for is not None
    # Bounding boxes while every polygon is an axis-aligned rectangle (grid cells).
    boxes: np.ndarray | None = np.empty((units.n, 4)) if collect else None
    for count, feature in enumerate(_all_features(source, QgsFeatureRequest())):
        if count % 1000 == 0:
            if feedback.isCanceled():
                raise QgsProcessingException("Cancelled.")
            feedback.setProgress(start + count * step)
        # Units are found again by feature id; a source without unique ids
        # is read in the same order both times.
        index = index_of.get(feature.id()) if index_of is not None else count
        if index is None or index >= units.n or seen[index]:
            raise QgsProcessingException(
                "The input layer changed while the algorithm ran (feature "
                f"{feature.id()} was not read before). Run it again on an unchanging layer."
            )
        seen[index] = True
        out = QgsFeature(output_fields)
        geometry = feature.geometry()
        out.setGeometry(geometry)
        out.setAttributes(feature.attributes() + added_values(index))
        if not sink.addFeature(out, QgsFeatureSink.FastInsert):
            raise QgsProcessingException(
                f"Could not write feature {feature.id()} to OUTPUT: {sink.lastError()}"
            )
        written += 1
        if collect:
            geometries.setdefault(int(collect_geometries_for[index]), []).append(geometry)
            if boxes is not None:
                box = _rectangle_box(geometry)
                if box is None:
                    boxes = None
                else:
                    boxes[index] = box
    if written != units.n:
        raise QgsProcessingException(
            f"Only {written} of {units.n} input features could be read again for OUTPUT; "
            "the input layer changed while the algorithm ran. Run it again."
        )
    feedback.setProgress(end)
    return WrittenUnits(written, geometries, boxes)


@dataclass
class WrittenUnits:
    """What :func:`write_unit_features` wrote and collected.

    Attributes
    ----------
    n_written : int
    geometries_by_code : dict of int to list of QgsGeometry
        Input geometries per cluster code (when asked for).
    rectangle_boxes : ndarray of shape (n, 4) or None
        ``xmin, ymin, xmax, ymax`` per unit when every input geometry is an
        axis-aligned rectangle (e.g. grid cells), else None.
    renamed_fields : list of (str, str)
        Input fields renamed because of a clash (old, new).
    """

    n_written: int
    geometries_by_code: dict[int, list[QgsGeometry]]
    rectangle_boxes: np.ndarray | None = None
    renamed_fields: list[tuple[str, str]] = field(default_factory=list)


def _rectangle_box(geometry: QgsGeometry) -> tuple[float, float, float, float] | None:
    """Bounding box of a single axis-aligned rectangle polygon, else None."""
    if geometry.isNull() or geometry.type() != QgsWkbTypes.PolygonGeometry:
        return None
    box = geometry.boundingBox()
    box_area = box.width() * box.height()
    if not box_area > 0 or abs(geometry.area() - box_area) > 1e-9 * box_area:
        return None
    if geometry.constGet().nCoordinates() > 5 + geometry.isMultipart():
        return None
    return box.xMinimum(), box.yMinimum(), box.xMaximum(), box.yMaximum()


# ---------------------------------------------------------------------------
# Cluster polygons
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RegularGrid:
    """Points on a regular grid: cell size and each point's column and row."""

    origin_x: float
    origin_y: float
    spacing_x: float
    spacing_y: float
    column: np.ndarray
    row: np.ndarray

    def edge_x(self, index: np.ndarray | int) -> np.ndarray | float:
        """x of the left edge of column ``index`` (computed one way, so shared edges match)."""
        return self.origin_x + (np.asarray(index) - 0.5) * self.spacing_x

    def edge_y(self, index: np.ndarray | int) -> np.ndarray | float:
        return self.origin_y + (np.asarray(index) - 0.5) * self.spacing_y


def _axis_spacing(values: np.ndarray) -> float | None:
    """Smallest regular step between distinct coordinate values, ignoring float noise."""
    distinct = np.unique(values)
    if distinct.size < 2:
        return None
    span = distinct[-1] - distinct[0]
    noise = 1e-6 * max(span, float(np.abs(distinct).max()))
    gaps = np.diff(distinct)
    gaps = gaps[gaps > noise]
    if gaps.size == 0:
        return None
    smallest = gaps.min()
    return float(np.median(gaps[gaps < 1.5 * smallest]))


def _snap(values: np.ndarray, spacing: float) -> tuple[np.ndarray, float, float] | None:
    """Grid index per value, refined origin and spacing; None if values are off the grid."""
    origin = values.min()
    index = np.rint((values - origin) / spacing)
    if index.max() > 0:
        # Least-squares fit of origin and spacing on the integer indices.
        spacing, origin = np.polyfit(index, values, 1)
    residual = np.abs((values - origin) / spacing - index)
    if residual.max() > GRID_TOLERANCE:
        return None
    return index.astype(np.int64), float(origin), float(spacing)


def detect_regular_grid(xy: np.ndarray) -> RegularGrid | None:
    """The regular grid ``xy`` sits on, or None.

    The spacing per axis is the smallest regular step between distinct
    coordinates. Points count as a grid when each lies within
    ``GRID_TOLERANCE`` of a cell of a grid node, no two share a cell, and at
    least ``GRID_MIN_ADJACENT_SHARE`` of them have another point among their
    8 neighbouring cells (so scattered points with rounded coordinates are
    not mistaken for a fine grid). One row or column borrows the other
    axis's spacing.
    """
    if xy.shape[0] < 2:
        return None
    spacing_x = _axis_spacing(xy[:, 0])
    spacing_y = _axis_spacing(xy[:, 1])
    if spacing_x is None and spacing_y is None:
        return None
    spacing_x = spacing_x if spacing_x is not None else spacing_y
    spacing_y = spacing_y if spacing_y is not None else spacing_x
    snapped_x = _snap(xy[:, 0], spacing_x)
    snapped_y = _snap(xy[:, 1], spacing_y)
    if snapped_x is None or snapped_y is None:
        return None
    column, origin_x, spacing_x = snapped_x
    row, origin_y, spacing_y = snapped_y
    n_rows = int(row.max()) + 3
    keys = (column + 1) * n_rows + (row + 1)
    if np.unique(keys).size != keys.size:
        return None
    has_neighbour = np.zeros(keys.size, dtype=bool)
    sorted_keys = np.sort(keys)
    for d_col in (-1, 0, 1):
        for d_row in (-1, 0, 1):
            if d_col or d_row:
                shifted = keys + d_col * n_rows + d_row
                position = np.searchsorted(sorted_keys, shifted).clip(max=keys.size - 1)
                has_neighbour |= sorted_keys[position] == shifted
    if has_neighbour.mean() < GRID_MIN_ADJACENT_SHARE:
        return None
    return RegularGrid(origin_x, origin_y, spacing_x, spacing_y, column, row)


def grid_cell_polygons(grid: RegularGrid, codes: np.ndarray, n_codes: int) -> list[QgsGeometry]:
    """Union of the grid cells of each cluster code.

    Horizontal runs of neighbouring cells of one cluster become one
    rectangle first, so GEOS unions a few rectangles per row instead of
    every cell.
    """
    order = np.lexsort((grid.column, grid.row, codes))
    code_sorted = codes[order]
    row_sorted = grid.row[order]
    column_sorted = grid.column[order]
    breaks = np.ones(order.size, dtype=bool)
    breaks[1:] = (
        (code_sorted[1:] != code_sorted[:-1])
        | (row_sorted[1:] != row_sorted[:-1])
        | (column_sorted[1:] != column_sorted[:-1] + 1)
    )
    run_start = np.flatnonzero(breaks)
    run_end = np.append(run_start[1:], order.size) - 1
    left = grid.edge_x(column_sorted[run_start])
    right = grid.edge_x(column_sorted[run_end] + 1)
    bottom = grid.edge_y(row_sorted[run_start])
    top = grid.edge_y(row_sorted[run_start] + 1)
    if grid.spacing_y < 0:
        bottom, top = top, bottom
    rectangles: list[list[QgsGeometry]] = [[] for _ in range(n_codes)]
    for code, x0, y0, x1, y1 in zip(
        code_sorted[run_start].tolist(),
        left.tolist(),
        bottom.tolist(),
        right.tolist(),
        top.tolist(),
    ):
        rectangles[code].append(QgsGeometry.fromRect(QgsRectangle(x0, y0, x1, y1)))
    return [_union(parts) for parts in rectangles]


def hull_polygons(
    xy: np.ndarray, codes: np.ndarray, n_codes: int, degenerate_buffer: float
) -> list[QgsGeometry]:
    """Convex hull of each cluster's points; degenerate hulls buffered by ``degenerate_buffer``."""
    points: list[list[QgsPointXY]] = [[] for _ in range(n_codes)]
    for code, (x, y) in zip(codes.tolist(), xy.tolist()):
        points[code].append(QgsPointXY(x, y))
    polygons = []
    for members in points:
        if not members:
            polygons.append(QgsGeometry())
            continue
        hull = QgsGeometry.fromMultiPointXY(members).convexHull()
        if hull.type() != QgsWkbTypes.PolygonGeometry or not hull.area() > 0:
            hull = hull.buffer(degenerate_buffer, 8)
        polygons.append(hull)
    return polygons


def dissolve_polygons(
    geometries_by_code: dict[int, list[QgsGeometry]], n_codes: int
) -> list[QgsGeometry]:
    """Dissolve (union) the member polygons of each cluster code."""
    return [_union(geometries_by_code.get(code, [])) for code in range(n_codes)]


def _union(parts: list[QgsGeometry]) -> QgsGeometry:
    if not parts:
        return QgsGeometry()
    union = QgsGeometry.unaryUnion(parts)
    if union.isNull() or union.isEmpty():
        # GEOS fails on some invalid input: repair the members and retry.
        repaired = [part.makeValid() for part in parts]
        union = QgsGeometry.unaryUnion(repaired)
    if union.isNull() or union.isEmpty():
        union = QgsGeometry.collectGeometry(parts).convexHull()
    if union.type() != QgsWkbTypes.PolygonGeometry:
        # makeValid can return a collection with lines; keep the polygons.
        polygons = [
            g for g in union.asGeometryCollection() if g.type() == QgsWkbTypes.PolygonGeometry
        ]
        union = QgsGeometry.collectGeometry(polygons) if polygons else union.convexHull()
    return union


def grid_of_rectangles(boxes: np.ndarray) -> RegularGrid | None:
    """The regular grid whose cells are exactly ``boxes`` (xmin, ymin, xmax, ymax), or None."""
    centres = np.column_stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2])
    grid = detect_regular_grid(centres)
    if grid is None:
        return None
    exact = 1e-6
    widths = boxes[:, 2] - boxes[:, 0]
    heights = boxes[:, 3] - boxes[:, 1]
    node_x = grid.origin_x + grid.column * grid.spacing_x
    node_y = grid.origin_y + grid.row * grid.spacing_y
    if (
        np.abs(widths - abs(grid.spacing_x)).max() > exact * abs(grid.spacing_x)
        or np.abs(heights - abs(grid.spacing_y)).max() > exact * abs(grid.spacing_y)
        or np.abs(centres[:, 0] - node_x).max() > exact * abs(grid.spacing_x)
        or np.abs(centres[:, 1] - node_y).max() > exact * abs(grid.spacing_y)
    ):
        return None
    return grid


def cluster_polygons(
    units: Units,
    codes: np.ndarray,
    n_codes: int,
    written: WrittenUnits | None = None,
) -> tuple[list[QgsGeometry], str]:
    """One polygon per cluster code, in the layer CRS, and how they were built.

    - Polygon input: the dissolve of the member polygons (collected by
      :func:`write_unit_features`). When the polygons are the cells of a
      regular grid, the dissolve is computed from horizontal runs of cells,
      which gives the same polygons far faster.
    - Points on a regular grid (spacing inferred in the layer CRS): the
      union of the members' grid cells.
    - Other points: the convex hull of the members, buffered by
      ``DEGENERATE_HULL_BUFFER_M`` when it is a point or a line.

    Returns
    -------
    polygons, method
        ``method`` is "dissolve", "grid cells" or "convex hull".
    """
    if units.is_polygon:
        if written is None:
            raise ValueError("polygon input needs the geometries collected while writing")
        if written.rectangle_boxes is not None:
            grid = grid_of_rectangles(written.rectangle_boxes)
            if grid is not None:
                return grid_cell_polygons(grid, codes, n_codes), "dissolve (grid cells)"
        return dissolve_polygons(written.geometries_by_code, n_codes), "dissolve"
    grid = detect_regular_grid(units.xy)
    if grid is not None:
        return grid_cell_polygons(grid, codes, n_codes), "grid cells"
    buffer = DEGENERATE_HULL_BUFFER_M * metres_in_layer_units(units.crs)
    return hull_polygons(units.xy, codes, n_codes, buffer), "convex hull"


def area_calculator(
    crs: QgsCoordinateReferenceSystem, context: QgsProcessingContext
) -> QgsDistanceArea:
    """Ellipsoidal area measurement for geometries in ``crs``."""
    calculator = QgsDistanceArea()
    calculator.setSourceCrs(crs, context.transformContext())
    ellipsoid = context.ellipsoid()
    if not ellipsoid or ellipsoid.upper() == "NONE":
        ellipsoid = crs.ellipsoidAcronym() or "EPSG:7030"
    calculator.setEllipsoid(ellipsoid)
    return calculator


def area_km2(calculator: QgsDistanceArea, geometry: QgsGeometry) -> float:
    """Area of ``geometry`` in square kilometres."""
    if geometry.isNull() or geometry.isEmpty():
        return 0.0
    area = calculator.measureArea(geometry)
    return calculator.convertAreaMeasurement(area, QgsUnitTypes.AreaSquareKilometers)


def write_cluster_features(
    sink: QgsFeatureSink,
    fields: QgsFields,
    rows: Iterable[dict],
    polygons: Sequence[QgsGeometry],
    calculator: QgsDistanceArea,
) -> int:
    """Write one feature per cluster; ``rows[i]`` holds the attributes of ``polygons[i]``.

    ``area_km2`` is measured here (ellipsoidal); other attributes come from
    the row by field name.
    """
    written = 0
    for row, polygon in zip(rows, polygons):
        feature = QgsFeature(fields)
        geometry = QgsGeometry(polygon)
        geometry.convertToMultiType()
        feature.setGeometry(geometry)
        values = dict(row)
        values["area_km2"] = area_km2(calculator, geometry)
        feature.setAttributes([values.get(f.name()) for f in fields])
        if not sink.addFeature(feature, QgsFeatureSink.FastInsert):
            raise QgsProcessingException(
                f"Could not write cluster {values.get('cluster_id')} to OUTPUT_CLUSTERS: "
                f"{sink.lastError()}"
            )
        written += 1
    return written


# ---------------------------------------------------------------------------
# Styling on load
# ---------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------


def write_report(
    path: str,
    result: Any,
    parameters: dict,
    *,
    title: str,
    quality: Any = None,
    notes: Sequence[str] | None = None,
) -> str:
    """Write the HTML report of ``result`` to ``path`` (core.report) and return ``path``."""
    from ..core.report import clustering_report_html
    from ..core.report import write_report as write_html

    html = clustering_report_html(result, parameters, title=title, quality=quality, notes=notes)
    write_html(html, path)
    return path
