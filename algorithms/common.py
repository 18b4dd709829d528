"""Helpers shared by the Processing algorithms: QGIS in, numpy arrays to core/, QGIS out.

Every algorithm is a thin adapter built from these steps:

1. :func:`check_targets` / :func:`require_dependencies` validate parameters
   and installed packages with messages that name the fix.
2. :func:`read_units` reads the input features once: a representative point
   per feature (the point itself; a polygon's point-on-surface), weights and
   any extra attributes, and rejects bad input with a helpful
   ``QgsProcessingException``.
3. ``metric_crs.choose_metric_crs`` and ``metric_crs.to_metric`` pick the
   CRS in metres in which distances are measured and project the points
   into it.
4. ``grids.unit_grid`` finds the regular grid the units sit on (grid points
   in the layer CRS, or square cells; the grid itself is core's
   ``Lattice``, inferred by ``core.adjacency``); ``grids.grid_order`` then
   gives the canonical row-major order in which core sees them (the arrays
   are permuted once, :func:`in_order`), and
   :func:`unit_neighbours` the neighbour graph of the guaranteed-PSU
   refinement. :func:`partition_keys`,
   :func:`per_partition_targets` and :func:`partition_parameters` read and
   check strata and their own targets.
5. :func:`run_clustering` calls core's ``cluster_partitions`` (imported
   lazily) inside :func:`core_errors_as_processing_exceptions`, with a
   :class:`CoreProgress` bridge for progress and cancellation, and combines
   the partitions' quality figures (:func:`combined_quality`).
6. :class:`ClusterAssignment` reshapes core's result (numpy arrays, no
   Python object per unit); :func:`write_units_with_clusters` copies every
   input feature with its cluster, a chunk at a time, through a
   :class:`BackgroundSink` (the sink writes and closes in a thread of its
   own); ``outlines.cluster_polygons`` builds one polygon per cluster
   (dissolve, grid-cell outlines traced by GDAL, or convex hull) and
   :func:`write_cluster_polygons` writes them;
   ``styling.style_output_on_load`` colours loaded outputs by cluster and
   :func:`write_report` writes the HTML report (core.report). The fields
   added to the outputs are in ``fields``, the wording of counts and
   example ids in messages in ``messages``.

:class:`TunedClusteringAlgorithmBase` holds what the vector and the raster
clustering algorithms share: the target, constraint, per-partition and
advanced parameters, their checks (:class:`ClusterSettings`) and the
cluster outputs.

Nothing here touches ``iface`` or ``QgsProject.instance()``: all of it runs
in Processing's background thread. Only ``numpy`` (shipped with QGIS) and
core's light modules (``errors``, ``dependencies``) are imported at the top;
the engine is imported inside ``processAlgorithm``, so the plugin loads and
explains itself when scipy or pandas is missing.
"""

from __future__ import annotations

import math
import queue
import threading
from array import array
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Sequence

import numpy as np
from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsDistanceArea,
    QgsFeature,
    QgsFeatureIterator,
    QgsFeatureRequest,
    QgsFeatureSink,
    QgsFeatureSource,
    QgsFields,
    QgsGeometry,
    QgsPointXY,
    QgsProcessing,
    QgsProcessingAlgorithm,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeatureSource,
    QgsProcessingFeedback,
    QgsProcessingOutputNumber,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterCrs,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterFeatureSink,
    QgsProcessingParameterField,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterNumber,
    QgsUnitTypes,
    QgsWkbTypes,
)
from qgis.PyQt.QtCore import QVariant
from qgis.PyQt.QtGui import QIcon

from ..core.dependencies import install_instructions, missing_packages
from ..processing_provider.provider import ICON_PATH
from .fields import (
    cluster_output_fields,
    unit_cluster_fields,
    unit_output_fields,
)
from .grids import RegularGrid
from .messages import EXAMPLE_IDS, features_have, id_examples, plural
from .outlines import geometry_from_wkb
from .styling import style_output_on_load

if TYPE_CHECKING:  # core.adjacency needs scipy: imported where used
    pass


# Status of the units (and cluster rows) of a partition whose clustering failed.
STATUS_FAILED = "failed"


# Layers of at most this many features are read once and kept in memory
# (tens of megabytes) instead of being read again for OUTPUT.
KEEP_FEATURES_MAX = 100_000


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
    target_weight: float,
    target_radius: float,
    max_weight: float | None = None,
    *,
    min_weight: float | None = None,
    max_radius: float | None = None,
) -> str | None:
    """Message for invalid targets, weight range or radius cap, or None when they are fine.

    Rules: target weight and radius > 0; ``0 <= min_weight <= target_weight
    <= max_weight``; ``max_radius >= target_radius``.
    """
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
    if min_weight is not None and not 0 <= min_weight <= target_weight:
        return (
            f"The minimum cluster weight ({min_weight:g}) must lie between 0 and the target "
            f"weight ({target_weight:g}). Set MIN_WEIGHT to at most the target weight (e.g. "
            "75% of it), or leave it empty for no lower bound."
        )
    if max_radius is not None and not max_radius >= target_radius:
        return (
            f"The maximum cluster radius ({max_radius:g} m) is below the target radius "
            f"({target_radius:g} m). Set MAX_RADIUS to at least the target radius, or leave it "
            "empty for no radius cap."
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
    feature_ids : ndarray of int64
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
    extra : dict of str to EncodedColumn
        Values of the ``extra_fields`` asked for, per unit (each distinct
        value stored once).
    n_centroid_fallbacks : int
        Polygons whose point-on-surface could not be computed (invalid
        geometry) and which are represented by their centroid instead.
    rectangle_boxes : ndarray of shape (n, 4) or None
        ``xmin, ymin, xmax, ymax`` per unit when asked for
        (``collect_rectangles``) and every geometry is an axis-aligned
        rectangle (grid cells); else None.
    features : list of QgsFeature or None
        The features themselves, whole, when ``read_units`` kept them (a
        small layer): :func:`write_unit_features` then copies them instead
        of reading the layer again. Dropped once written.
    """

    feature_ids: np.ndarray
    xy: np.ndarray
    weights: np.ndarray | None
    is_polygon: bool
    crs: QgsCoordinateReferenceSystem
    fields: QgsFields
    wkb_type: int
    extra: dict[str, EncodedColumn] = field(default_factory=dict)
    n_centroid_fallbacks: int = 0
    rectangle_boxes: np.ndarray | None = None
    features: list[QgsFeature] | None = None

    @property
    def n(self) -> int:
        return len(self.feature_ids)

    @property
    def weights_or_ones(self) -> np.ndarray:
        return self.weights if self.weights is not None else np.ones(self.n)

    def index_by_feature_id(self) -> FeatureIndex | None:
        """Feature id -> unit index; None if some source repeats feature ids."""
        return FeatureIndex.of(self.feature_ids)


class FeatureIndex:
    """Unit index of a feature id: a sorted copy of the ids (not a dict of millions of ints)."""

    def __init__(self, sorted_ids: np.ndarray, positions: np.ndarray) -> None:
        self.sorted_ids = sorted_ids
        self.positions = positions

    @classmethod
    def of(cls, feature_ids: np.ndarray) -> FeatureIndex | None:
        """The index of ``feature_ids``; None when an id repeats."""
        positions = np.argsort(feature_ids, kind="stable")
        sorted_ids = feature_ids[positions]
        if sorted_ids.size > 1 and not (sorted_ids[1:] != sorted_ids[:-1]).all():
            return None
        return cls(sorted_ids, positions)

    def get(self, feature_id: int, default: int | None = None) -> int | None:
        at = int(np.searchsorted(self.sorted_ids, feature_id))
        if at < self.sorted_ids.size and self.sorted_ids[at] == feature_id:
            return int(self.positions[at])
        return default


@dataclass
class EncodedColumn:
    """One field's value for every unit, each distinct value stored once.

    Attributes
    ----------
    codes : ndarray of int32, shape (n,)
        Index of each unit's value into ``values``.
    values : list
        The distinct values, as plain Python (None for NULL).
    """

    codes: np.ndarray
    values: list[Any]


class _ColumnEncoder:
    """Builds an :class:`EncodedColumn` a value at a time."""

    def __init__(self) -> None:
        self.codes = array("i")
        self.values: list[Any] = []
        self.lookup: dict[Any, int] = {}

    def add(self, raw: Any) -> None:
        value = python_value(raw)
        try:
            code = self.lookup.get(value)
            if code is None:
                code = self.lookup[value] = len(self.values)
                self.values.append(value)
        except TypeError:  # an unhashable value: an entry of its own
            code = len(self.values)
            self.values.append(value)
        self.codes.append(code)

    def column(self) -> EncodedColumn:
        return EncodedColumn(np.frombuffer(self.codes, dtype=np.int32), self.values)


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
    collect_rectangles: bool = False,
    keep_features: bool = False,
) -> Units:
    """Read every feature of ``source`` as a unit: representative point, weight, extras.

    Geometry validity checks of the context are skipped on purpose, so that
    no feature is dropped: invalid but usable polygons still get a point.
    With ``collect_rectangles`` (polygon input), the bounding box of every
    polygon is kept as long as all are axis-aligned rectangles (grid cells),
    for :func:`grid_of_rectangles`. With ``keep_features``, a layer of at
    most ``KEEP_FEATURES_MAX`` features is kept whole in ``Units.features``
    (read once instead of twice; a larger layer is read again when written,
    so memory stays bounded).

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
    total = source.featureCount()
    kept: list[QgsFeature] | None = (
        [] if keep_features and 0 <= total <= KEEP_FEATURES_MAX else None
    )
    if kept is None:  # only what clustering needs; OUTPUT reads the layer again
        request.setSubsetOfAttributes([i for i in [weight_index, *extra_indices] if i >= 0])
    start, end = progress_span
    step = (end - start) / total if total and total > 0 else 0.0

    # Typed arrays, not lists: a country's units cost bytes each, not Python objects.
    feature_ids = array("q")
    xs = array("d")
    ys = array("d")
    weights_read = array("d")
    raw_weights: list[Any] | None = None  # once a value is not a number (NULL, text)
    extra = {name: _ColumnEncoder() for name in extra_fields}
    # Polygons are read as WKB and looked at a chunk at a time: a grid cell
    # (an exact rectangle) needs no GEOS call (see _PolygonReader).
    polygons = _PolygonReader(collect_rectangles) if is_polygon else None
    n_fallbacks = 0
    for count, feature in enumerate(_all_features(source, request)):
        if count % 1000 == 0:
            if feedback.isCanceled():
                raise QgsProcessingException("Cancelled.")
            feedback.setProgress(start + count * step)
        feature_ids.append(feature.id())
        if kept is not None:
            kept.append(feature)
        geometry = feature.geometry()
        if polygons is not None:
            polygons.add(count, geometry)
            xs.append(math.nan)
            ys.append(math.nan)
        else:
            point = _point_of(geometry)
            xs.append(point[0])
            ys.append(point[1])
        if weight_index >= 0:
            raw = feature.attribute(weight_index)
            if raw_weights is None:
                try:
                    weights_read.append(raw)
                except TypeError:  # NULL or text: kept as read, reported below
                    raw_weights = [*weights_read.tolist(), raw]
            else:
                raw_weights.append(raw)
        for name, index in zip(extra_fields, extra_indices):
            extra[name].add(feature.attribute(index))

    xy = np.column_stack([np.frombuffer(xs, dtype=float), np.frombuffer(ys, dtype=float)])
    del xs, ys
    feature_ids = np.frombuffer(feature_ids, dtype=np.int64)
    boxes = None
    if polygons is not None:
        boxes = polygons.finish(xy)
        n_fallbacks = polygons.n_fallbacks
    null_geometry_ids = [feature_ids[i] for i in np.flatnonzero(np.isnan(xy[:, 0])).tolist()]
    weights = None
    if weight_index >= 0:
        weights = (
            np.frombuffer(weights_read, dtype=float)
            if raw_weights is None
            else _weights_array(raw_weights)
        )
    del raw_weights
    null_weight_ids: list[int] = []
    negative_weight_ids: list[int] = []
    if weights is not None:
        null_weight_ids = [feature_ids[i] for i in np.flatnonzero(~np.isfinite(weights)).tolist()]
        negative_weight_ids = [feature_ids[i] for i in np.flatnonzero(weights < 0).tolist()]

    if not feature_ids.size:
        raise QgsProcessingException(
            "The input layer has no features (or none is selected while 'Selected features "
            "only' is ticked). Choose a layer with points or polygons to cluster."
        )
    if null_geometry_ids:
        raise QgsProcessingException(
            f"{features_have(null_geometry_ids)} a null or empty geometry (out of "
            f"{len(feature_ids)}; feature ids {id_examples(null_geometry_ids)}). Every feature "
            "needs a location: "
            "run 'Remove null geometries' on the layer first (or fix those geometries)."
        )
    if null_weight_ids:
        raise QgsProcessingException(
            f"{features_have(null_weight_ids)} a NULL or non-numeric weight in '{weight_field}' "
            f"(feature ids {id_examples(null_weight_ids)}). Fill them, e.g. with the Field "
            f'calculator: coalesce("{weight_field}", 0), or remove those features '
            f'(Extract by expression: "{weight_field}" IS NOT NULL).'
        )
    if negative_weight_ids:
        raise QgsProcessingException(
            f"{features_have(negative_weight_ids)} a negative weight in '{weight_field}' "
            f"(feature ids {id_examples(negative_weight_ids)}). Weights must be 0 or more: set "
            f'them to 0 (Field calculator: max("{weight_field}", 0)) or remove those features '
            f'(Extract by expression: "{weight_field}" >= 0).'
        )
    if n_fallbacks:
        feedback.pushWarning(
            f"{plural(n_fallbacks, 'polygon')}: no point-on-surface could be computed "
            "(invalid geometry); the centroid stands for them. Consider 'Fix geometries'."
        )
    feedback.setProgress(end)
    return Units(
        feature_ids=feature_ids,
        xy=xy,
        weights=weights,
        is_polygon=is_polygon,
        crs=source.sourceCrs(),
        fields=fields,
        wkb_type=source.wkbType(),
        extra={name: encoder.column() for name, encoder in extra.items()},
        n_centroid_fallbacks=n_fallbacks,
        rectangle_boxes=boxes if boxes is not None and boxes.shape[0] else None,
        features=kept if kept is not None and len(kept) == feature_ids.size else None,
    )


def _point_of(geometry: QgsGeometry) -> tuple[float, float]:
    """x, y of a point feature (a multipoint's centroid); NaN for a null or empty geometry."""
    try:
        point = geometry.asPoint()  # the common case in one call; NaN when empty
    except ValueError:  # null geometry
        return math.nan, math.nan
    except TypeError:  # not a single point
        if geometry.isEmpty():
            return math.nan, math.nan
        point, _ = representative_point(geometry, False)
    return point.x(), point.y()


def _weights_array(values: list[Any]) -> np.ndarray:
    """Weights as floats; NaN for NULL or non-numeric values."""
    try:
        return np.asarray(values, dtype=float)
    except (TypeError, ValueError):  # NULLs or text: value by value
        converted = (_as_float(value) for value in values)
        return np.fromiter(
            (math.nan if value is None else value for value in converted),
            dtype=float,
            count=len(values),
        )


# WKB of a single polygon with one ring of 5 points (93 bytes), alone or as the
# only part of a multipolygon (9 more bytes): how grid cells come.
_POLYGON5_WKB = np.dtype(
    [("order", "u1"), ("type", "<u4"), ("rings", "<u4"), ("points", "<u4"), ("xy", "<f8", (10,))]
)
_MULTIPOLYGON5_WKB = np.dtype(
    [("order", "u1"), ("type", "<u4"), ("parts", "<u4"), ("polygon", _POLYGON5_WKB)]
)


class _PolygonReader:
    """Representative points (and grid-cell boxes) of polygons, a chunk at a time.

    Grid cells are axis-aligned rectangles; their point-on-surface is their
    centre (GEOS's interior point of a rectangle is exactly the midpoint of
    its bounding box), so they are recognised from their WKB with numpy and
    need no GEOS call. Any other polygon goes through
    :func:`representative_point` (and :func:`_rectangle_box`) as one geometry.
    """

    CHUNK = 20_000

    def __init__(self, collect_rectangles: bool) -> None:
        self.collect = collect_rectangles
        self.pending: dict[int, list] = {
            _POLYGON5_WKB.itemsize: [],
            _MULTIPOLYGON5_WKB.itemsize: [],
        }
        self.others: list[tuple[int, QgsGeometry]] = []
        self.n_pending = 0
        self.n_fallbacks = 0
        # Per flush: unit indices, their points and boxes (NaN: not a rectangle).
        self.done: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

    def add(self, index: int, geometry: QgsGeometry) -> None:
        wkb = geometry.asWkb()
        bucket = self.pending.get(wkb.size())
        if bucket is None:
            self.others.append((index, geometry))
        else:
            bucket.append((index, bytes(wkb)))
        self.n_pending += 1
        if self.n_pending >= self.CHUNK:
            self.flush()

    def flush(self) -> None:
        for size, entries in self.pending.items():
            if entries:
                self._rectangles(size, entries)
                entries.clear()
        if self.others:
            indices = np.fromiter((i for i, _ in self.others), dtype=np.int64)
            points = np.full((indices.size, 2), np.nan)
            boxes = np.full((indices.size, 4), np.nan)
            for row, (_, geometry) in enumerate(self.others):
                if geometry.isNull() or geometry.isEmpty():
                    continue  # stays NaN: reported as a null geometry
                point, fell_back = representative_point(geometry, True)
                self.n_fallbacks += fell_back
                if point is not None:
                    points[row] = (point.x(), point.y())
                if self.collect:
                    box = _rectangle_box(geometry)
                    if box is not None:
                        boxes[row] = box
            self.done.append((indices, points, boxes))
            self.others.clear()
        self.n_pending = 0

    def _rectangles(self, size: int, entries: list[tuple[int, bytes]]) -> None:
        """Exact rectangles among ``entries`` (WKB of ``size`` bytes) done here, others queued."""
        indices = np.fromiter((i for i, _ in entries), dtype=np.int64, count=len(entries))
        data = b"".join(wkb for _, wkb in entries)
        if size == _POLYGON5_WKB.itemsize:
            records = np.frombuffer(data, dtype=_POLYGON5_WKB)
            shape_ok = np.ones(len(records), dtype=bool)
        else:
            outer = np.frombuffer(data, dtype=_MULTIPOLYGON5_WKB)
            shape_ok = (outer["order"] == 1) & (outer["type"] == 6) & (outer["parts"] == 1)
            records = outer["polygon"]
        shape_ok &= (
            (records["order"] == 1)
            & (records["type"] == 3)
            & (records["rings"] == 1)
            & (records["points"] == 5)
        )
        ring = records["xy"]
        x, y = ring[:, 0::2], ring[:, 1::2]
        xmin, xmax = x.min(axis=1), x.max(axis=1)
        ymin, ymax = y.min(axis=1), y.max(axis=1)
        on_corners = ((x == xmin[:, None]) | (x == xmax[:, None])).all(axis=1) & (
            (y == ymin[:, None]) | (y == ymax[:, None])
        ).all(axis=1)
        # Each edge moves along exactly one axis, and the ring is closed.
        axis_edges = ((x[:, 1:] == x[:, :-1]) ^ (y[:, 1:] == y[:, :-1])).all(axis=1)
        closed = (x[:, 0] == x[:, 4]) & (y[:, 0] == y[:, 4])
        rectangle = shape_ok & on_corners & axis_edges & closed & (xmax > xmin) & (ymax > ymin)
        box = np.column_stack([xmin, ymin, xmax, ymax])[rectangle]
        centre = np.column_stack([(box[:, 0] + box[:, 2]) / 2.0, (box[:, 1] + box[:, 3]) / 2.0])
        self.done.append((indices[rectangle], centre, box))
        for index, offset in zip(indices[~rectangle].tolist(), np.flatnonzero(~rectangle).tolist()):
            geometry = QgsGeometry()
            geometry.fromWkb(data[offset * size : (offset + 1) * size])
            self.others.append((index, geometry))

    def finish(self, xy: np.ndarray) -> np.ndarray | None:
        """Fill ``xy`` with the points; the boxes when every polygon is a rectangle, else None."""
        self.flush()
        boxes = np.full((xy.shape[0], 4), np.nan) if self.collect else None
        for indices, points, box in self.done:
            xy[indices] = points
            if boxes is not None:
                boxes[indices] = box
        self.done.clear()
        if boxes is None or np.isnan(boxes).any():
            return None
        return boxes


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


class PartitionProgress(CoreProgress):
    """:class:`CoreProgress` for partitioned runs: logs one line per finished partition.

    core reports every step of every running partition; with partitions
    running in parallel the log would alternate between them, so only the
    "(n/N partitions done)" messages are written (the bar still moves).
    """

    def __call__(self, fraction: float, message: str | None = None) -> None:
        if message and "partitions done" not in message:
            message = None
        super().__call__(fraction, message)


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
    """core's result in the shape the outputs need: one code per unit, lists per cluster.

    Per-unit values are numpy arrays (no Python object per unit); the values
    of the added fields are made a chunk of units at a time
    (:meth:`unit_columns`).

    Attributes
    ----------
    codes : ndarray of shape (n,), int
        Row of the cluster table each unit belongs to; -1 for a unit of a
        failed partition (no cluster). The only per-unit array: the pass
        and the other cluster values come from the cluster's row.
    cluster_ids, weight, radius_m, n_units, passes : list
        One entry per cluster (row of ``result.clusters``).
    status : list of str
        Status per cluster ("ok", "under_min", ...; "ok" when core gave none).
    partition : list of str or None
        Partition name per cluster, when the run had partitions.
    """

    codes: np.ndarray
    cluster_ids: list[str]
    weight: list[float]
    radius_m: list[float]
    n_units: list[int]
    passes: list[int]
    status: list[str] = field(default_factory=list)
    partition: list[str] | None = None

    @classmethod
    def from_result(cls, result: Any) -> ClusterAssignment:
        """From a core ``ClusteringResult`` or ``PartitionedResult``.

        ``labels`` index rows of ``clusters``; a label of -1 (a failed
        partition) gives a unit without cluster and the status "failed".
        """
        from ..core.partitions import partition_name

        clusters = result.clusters.reset_index(drop=True)
        n_clusters = len(clusters)
        status = (
            [str(value) for value in clusters["status"]]
            if "status" in clusters.columns
            else ["ok"] * n_clusters
        )
        partition = (
            [partition_name(value) for value in clusters["partition"]]
            if "partition" in clusters.columns and clusters["partition"].notna().any()
            else None
        )
        return cls(
            codes=np.asarray(result.labels),
            cluster_ids=[str(c) for c in clusters["cluster_id"]],
            weight=clusters["weight"].astype(float).tolist(),
            radius_m=clusters["radius_m"].astype(float).tolist(),
            n_units=clusters["n_units"].astype(int).tolist(),
            passes=clusters["pass"].astype(int).tolist(),
            status=status,
            partition=partition,
        )

    @property
    def n_clusters(self) -> int:
        return len(self.cluster_ids)

    def unit_columns(self, units: np.ndarray | slice) -> list[list]:
        """Values of :func:`unit_cluster_fields` for ``units`` (indices or a slice), by field.

        A unit without cluster (code -1) gets NULL values and the status "failed".
        """
        codes = self.codes[units]
        # Index -1 (no cluster) picks the appended last entry: None, or "failed".
        ids = np.array([*self.cluster_ids, None], dtype=object)[codes].tolist()
        weight = np.array([*self.weight, None], dtype=object)[codes].tolist()
        radius = np.array([*self.radius_m, None], dtype=object)[codes].tolist()
        passes = np.array([*self.passes, None], dtype=object)[codes].tolist()
        status = np.array([*(self.status or ["ok"] * self.n_clusters), STATUS_FAILED], dtype=object)
        return [ids, weight, radius, passes, status[codes].tolist()]

    def unit_values(self, index: int) -> list:
        """Values of :func:`unit_cluster_fields` for unit ``index``."""
        return [column[0] for column in self.unit_columns(np.array([index]))]

    def cluster_rows(self) -> list[dict]:
        """Attributes per cluster, keyed like :func:`cluster_output_fields` (but area_km2)."""
        return [
            {
                "cluster_id": self.cluster_ids[code],
                "weight": self.weight[code],
                "radius_m": self.radius_m[code],
                "n_units": self.n_units[code],
                "pass": self.passes[code],
                "status": self.status[code] if self.status else "ok",
                "partition": self.partition[code] if self.partition else None,
            }
            for code in range(self.n_clusters)
        ]


# The id of a feature not yet added anywhere (FID_NULL).
_NEW_FEATURE_ID = QgsFeature().id()

# Features handed to a sink at once: few enough to keep memory flat, many
# enough that the per-call overhead vanishes.
WRITE_CHUNK = 5_000

_POINT_WKB = np.dtype([("order", "u1"), ("type", "<u4"), ("xy", "<f8", (2,))])
_RECTANGLE_WKB = np.dtype(
    [("order", "u1"), ("type", "<u4"), ("rings", "<u4"), ("points", "<u4"), ("xy", "<f8", (10,))]
)


def _geometries_from_records(records: np.ndarray) -> list[QgsGeometry]:
    """One QgsGeometry per WKB record of ``records`` (a structured array)."""
    data = records.tobytes()
    size = records.dtype.itemsize
    geometries = []
    for offset in range(0, len(data), size):
        geometry = QgsGeometry()
        geometry.fromWkb(data[offset : offset + size])
        geometries.append(geometry)
    return geometries


def point_geometries(x: np.ndarray, y: np.ndarray) -> list[QgsGeometry]:
    """Point geometries, built from one WKB buffer made by numpy."""
    records = np.zeros(np.shape(x)[0], dtype=_POINT_WKB)
    records["order"] = 1  # little-endian
    records["type"] = QgsWkbTypes.Point
    records["xy"][:, 0] = x
    records["xy"][:, 1] = y
    return _geometries_from_records(records)


def rectangle_geometries(
    xmin: np.ndarray, ymin: np.ndarray, xmax: np.ndarray, ymax: np.ndarray
) -> list[QgsGeometry]:
    """Rectangle polygons with the vertices of ``QgsGeometry.fromRect``, built in bulk."""
    records = np.zeros(np.shape(xmin)[0], dtype=_RECTANGLE_WKB)
    records["order"] = 1
    records["type"] = QgsWkbTypes.Polygon
    records["rings"] = 1
    records["points"] = 5
    # (xmin ymin, xmax ymin, xmax ymax, xmin ymax, xmin ymin), as fromRect.
    ring = records["xy"]
    for slot, values in enumerate((xmin, ymin, xmax, ymin, xmax, ymax, xmin, ymax, xmin, ymin)):
        ring[:, slot] = values
    return _geometries_from_records(records)


def add_features(sink: QgsFeatureSink, features: list[QgsFeature], output_name: str) -> None:
    """``sink.addFeatures(features)``; QgsProcessingException when the sink refuses them."""
    if features and not sink.addFeatures(features, QgsFeatureSink.FastInsert):
        raise QgsProcessingException(
            f"Could not write features to {output_name}: {sink.lastError()}"
        )


def write_new_features(
    sink: BackgroundSink,
    fields: QgsFields,
    n: int,
    chunk: Callable[[int, int], tuple[list[QgsGeometry], list[list]]],
    feedback: QgsProcessingFeedback,
    progress_span: tuple[float, float],
) -> None:
    """Write ``n`` new features, ``WRITE_CHUNK`` at a time, then :meth:`~BackgroundSink.finish`.

    ``chunk(start, stop)`` gives the geometries of features ``start..stop-1``
    and their attribute values field by field (one list per field).
    Cancellation is checked and progress reported between chunks.
    """
    begin, end = progress_span
    try:
        for start in range(0, n, WRITE_CHUNK):
            if feedback.isCanceled():
                raise QgsProcessingException("Cancelled.")
            feedback.setProgress(begin + (end - begin) * start / max(n, 1))
            stop = min(start + WRITE_CHUNK, n)
            geometries, columns = chunk(start, stop)
            features = []
            for geometry, values in zip(geometries, zip(*columns)):
                feature = QgsFeature(fields)
                feature.setGeometry(geometry)
                feature.setAttributes(list(values))
                features.append(feature)
            sink.add(features)
    except BaseException:
        sink.abandon()
        raise
    sink.finish()
    feedback.setProgress(end)


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
    collect_geometries: bool = True,
) -> tuple[str, WrittenUnits]:
    """Create the ``output_name`` sink and write every input feature with its cluster.

    Returns the destination id and what :func:`write_unit_features` collected
    (member polygons for the dissolve, unless ``collect_geometries`` is False:
    not needed when the polygons are cells of a known grid).
    """
    fields, renamed = unit_output_fields(units.fields, unit_cluster_fields())
    for old, new in renamed:
        feedback.pushWarning(f"The input field '{old}' is kept as '{new}' in {output_name}.")
    sink, dest_id = algorithm.parameterAsSink(
        parameters, output_name, context, fields, units.wkb_type, units.crs
    )
    if sink is None:
        raise QgsProcessingException(algorithm.invalidSinkError(parameters, output_name))
    holder = [sink]
    del sink
    writer = BackgroundSink(holder, output_name)
    written = write_unit_features(
        source,
        units,
        writer,
        fields,
        assignment.unit_columns,
        feedback,
        collect_geometries_for=(
            assignment.codes if units.is_polygon and collect_geometries else None
        ),
        progress_span=progress_span,
    )
    written.renamed_fields = renamed
    written.closing = writer
    return dest_id, written


def write_cluster_polygons(
    algorithm: QgsProcessingAlgorithm,
    parameters: dict,
    output_name: str,
    context: QgsProcessingContext,
    polygons: Sequence[QgsGeometry | bytes | None],
    assignment: ClusterAssignment,
    crs: QgsCoordinateReferenceSystem,
) -> str:
    """Create the ``output_name`` sink (MultiPolygon, :func:`cluster_output_fields`) and fill it.

    A ``partition`` field is added when the clusters come from a run with partitions.
    """
    fields = cluster_output_fields(with_partition=assignment.partition is not None)
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


def write_unit_features(
    source: QgsFeatureSource,
    units: Units,
    sink: BackgroundSink,
    output_fields: QgsFields,
    added_columns: Callable[[np.ndarray], list[list]],
    feedback: QgsProcessingFeedback,
    *,
    collect_geometries_for: np.ndarray | None = None,
    progress_span: tuple[float, float] = (90.0, 95.0),
) -> WrittenUnits:
    """Copy every input feature to ``sink`` with the added fields' values appended.

    The input features are read again and written ``WRITE_CHUNK`` at a time:
    each keeps its geometry and attributes, and gets the values of the added
    fields (the last fields of ``output_fields``) for its unit.

    Parameters
    ----------
    added_columns : callable
        Array of unit indices -> values of the added fields, one list per field.
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
    feature_ids = units.feature_ids
    index_of: dict[int, int] | None = None  # made only if the features come in another order
    seen = np.zeros(units.n, dtype=bool)
    geometries: dict[int, list[QgsGeometry]] = {}
    start, end = progress_span
    step = (end - start) / max(units.n, 1)
    written = 0
    collect = collect_geometries_for is not None
    n_input = units.fields.count()
    n_output = output_fields.count()
    pending: list[QgsFeature] = []
    pending_index: list[int] = []

    def flush() -> None:
        columns = added_columns(np.asarray(pending_index, dtype=np.int64))
        for feature, values in zip(pending, zip(*columns)):
            feature.setId(_NEW_FEATURE_ID)  # the sink numbers it, as a new feature
            feature.setFields(output_fields, False)
            feature.resizeAttributes(n_output)
            for position, value in enumerate(values, n_input):
                feature.setAttribute(position, value)
        sink.add(list(pending))
        pending.clear()
        pending_index.clear()

    features: Iterable[QgsFeature] = (
        units.features if units.features is not None else _all_features(source, QgsFeatureRequest())
    )
    units.features = None  # written once: dropped when done
    n_units = units.n
    try:
        for count, feature in enumerate(features):
            if count % 1000 == 0:
                if feedback.isCanceled():
                    raise QgsProcessingException("Cancelled.")
                feedback.setProgress(start + count * step)
            # Units are found again by feature id (usually in the order first
            # read); a source without unique ids is read in the same order both times.
            fid = feature.id()
            if count < n_units and feature_ids[count] == fid:
                index = count
            else:
                if index_of is None:
                    index_of = units.index_by_feature_id() or {}
                index = index_of.get(fid, count if not index_of else None)
            if index is None or index >= n_units or seen[index]:
                raise QgsProcessingException(
                    "The input layer changed while the algorithm ran (feature "
                    f"{fid} was not read before). Run it again on an unchanging layer."
                )
            seen[index] = True
            pending.append(feature)
            pending_index.append(index)
            written += 1
            if collect:
                geometry = feature.geometry()
                geometries.setdefault(int(collect_geometries_for[index]), []).append(geometry)
            if len(pending) == WRITE_CHUNK:
                flush()
        flush()
    except BaseException:
        sink.abandon()
        raise
    sink.finish()
    if written != units.n:
        raise QgsProcessingException(
            f"Only {written} of {units.n} input features could be read again for OUTPUT; "
            "the input layer changed while the algorithm ran. Run it again."
        )
    feedback.setProgress(end)
    return WrittenUnits(written, geometries)


@dataclass
class WrittenUnits:
    """What :func:`write_unit_features` wrote and collected.

    Attributes
    ----------
    n_written : int
    geometries_by_code : dict of int to list of QgsGeometry
        Input geometries per cluster code (when asked for).
    renamed_fields : list of (str, str)
        Input fields renamed because of a clash (old, new).
    """

    n_written: int
    geometries_by_code: dict[int, list[QgsGeometry]]
    renamed_fields: list[tuple[str, str]] = field(default_factory=list)
    closing: BackgroundSink | None = None


def release_freed_memory() -> None:
    """Give memory freed by Python and numpy back to the system, where the C library can.

    glibc keeps freed heap memory (in one arena per thread) for reuse; after
    clustering a country that is hundreds of megabytes the writing phase does
    not need. ``malloc_trim`` returns it; elsewhere this does nothing.
    """
    import ctypes
    import ctypes.util
    import sys

    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):
        pass


class BackgroundSink:
    """A feature sink fed and closed by a thread of its own.

    Most of the cost of writing features is in the sink itself (GDAL
    encodes and inserts them), and closing a GeoPackage builds its spatial
    index (about 10 µs per feature with GDAL 3.6: 10 s for a million cells).
    PyQGIS releases the GIL in both, so while this thread writes one chunk of
    features the algorithm builds the next, and while it closes the file the
    algorithm goes on with the cluster polygons and the other outputs.

    Only this thread touches the sink once it is handed over. :meth:`finish`
    waits until every feature is written (and raises the sink's error, if
    any); :meth:`wait` until the sink is closed: the caller waits before
    returning its results, so QGIS only loads complete outputs.

    Parameters
    ----------
    holder : list
        A list holding the only reference to the sink (the caller drops its own).
    output_name : str
        The output, for error messages.
    depth : int
        Chunks waiting to be written at most (bounds memory).
    """

    def __init__(self, holder: list, output_name: str, depth: int = 2) -> None:
        self.output_name = output_name
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._written = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(holder,), name="tgc-write-sink", daemon=True
        )
        self._thread.start()

    def _run(self, holder: list) -> None:
        sink = holder.pop()
        try:
            while True:
                features = self._queue.get()
                if features is None:
                    break
                if self._error is None:
                    try:
                        add_features(sink, features, self.output_name)
                    except BaseException as error:  # noqa: BLE001 - raised in the caller
                        self._error = error
        finally:
            self._written.set()
            del sink  # the last reference: the file is closed here, in this thread

    def add(self, features: list[QgsFeature]) -> None:
        """Queue ``features`` for writing (blocks while ``depth`` chunks are waiting)."""
        if self._error is not None:
            raise self._error
        self._queue.put(features)

    def finish(self) -> None:
        """Wait until every queued feature is written; the sink is then being closed."""
        self._queue.put(None)
        self._written.wait()
        if self._error is not None:
            raise self._error

    def abandon(self) -> None:
        """Stop after the features queued so far (the caller failed); errors are dropped."""
        self._queue.put(None)
        self._written.wait()

    def wait(self) -> None:
        """Wait until the sink is closed."""
        self._thread.join()


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
    polygons: Sequence[QgsGeometry | bytes | None],
    calculator: QgsDistanceArea,
) -> int:
    """Write one feature per cluster; ``rows[i]`` holds the attributes of ``polygons[i]``.

    A polygon is a QgsGeometry or WKB (None: no geometry). ``area_km2`` is
    measured here (ellipsoidal); other attributes come from the row by field
    name.
    """
    written = 0
    for row, polygon in zip(rows, polygons):
        feature = QgsFeature(fields)
        if isinstance(polygon, QgsGeometry):
            geometry = QgsGeometry(polygon)
        else:
            geometry = geometry_from_wkb(polygon)
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


# ---------------------------------------------------------------------------
# Grids, canonical unit order and neighbours
# ---------------------------------------------------------------------------


@dataclass
class Neighbours:
    """The neighbour graph of the units and how it was made (for the log and report).

    Attributes
    ----------
    matrix : scipy.sparse matrix (n, n) or core ``PerPartition``
        Symmetric graph, in the order of the units given; for grid units a
        ``PerPartition`` that makes each partition's graph from its rows.
    description : str
        One sentence, e.g. "grid cells sharing an edge or a corner".
    distance_m : float or None
        Longest link between scattered points, metres.
    """

    matrix: Any
    description: str
    distance_m: float | None = None


def unit_neighbours(
    source: QgsFeatureSource,
    units: Units,
    xy_metric: np.ndarray,
    grid: RegularGrid | None,
    neighbour_distance: float | None,
    feedback: QgsProcessingFeedback,
) -> Neighbours:
    """Which units are neighbours, from what the adapter knows best.

    - Units on a regular grid (cells or grid points, the grid found in the
      layer CRS, where a lon/lat grid is regular): cells sharing an edge or a
      corner (8 neighbours).
    - Other polygons: polygons that touch or overlap (an edge or a corner is
      enough); the geometries are read again for this.
    - Other points: Delaunay neighbours closer than ``neighbour_distance``
      metres (default inferred from the spacing of the points, and logged).
    """
    from ..core.adjacency import cell_adjacency, distance_adjacency, polygon_adjacency

    if neighbour_distance is not None and (grid is not None or units.is_polygon):
        feedback.pushInfo(
            "NEIGHBOUR_DISTANCE is only used for scattered points: grid cells and polygons "
            "are neighbours when they touch."
        )
    if grid is not None:
        from ..core.partitions import PerPartition

        # Each partition's graph is made when it is clustered: the whole
        # layer's graph would be the largest thing in memory (1.5 GB at 5M cells).
        matrix = PerPartition(
            lambda rows, column=grid.column, row=grid.row: (
                cell_adjacency(column[rows], row[rows]).matrix
            )
        )
        what = "grid cells" if units.is_polygon else "grid points (cells of their grid)"
        return Neighbours(matrix, f"{what} sharing an edge or a corner (8 neighbours)")
    if units.is_polygon:
        geometries = shapely_geometries(source, units, feedback)
        info = polygon_adjacency(geometries)
        return Neighbours(info.matrix, "polygons sharing an edge or a corner")
    with core_errors_as_processing_exceptions():
        info = distance_adjacency(xy_metric, neighbour_distance)
    origin = "NEIGHBOUR_DISTANCE" if neighbour_distance is not None else "inferred from the spacing"
    feedback.pushInfo(
        f"Neighbour distance: {info.max_distance:,.0f} m ({origin}). Scattered points closer "
        "than this (Delaunay neighbours) count as neighbours; set NEIGHBOUR_DISTANCE to change it."
    )
    return Neighbours(
        info.matrix,
        f"points closer than {info.max_distance:,.0f} m ({origin}; Delaunay neighbours)",
        float(info.max_distance),
    )


def shapely_geometries(
    source: QgsFeatureSource, units: Units, feedback: QgsProcessingFeedback
) -> list:
    """The units' shapely geometries (layer CRS), in unit order; invalid ones repaired."""
    from shapely import wkb

    index_of = units.index_by_feature_id()
    geometries: list = [None] * units.n
    request = QgsFeatureRequest().setNoAttributes()
    for count, feature in enumerate(_all_features(source, request)):
        if count % 1000 == 0 and feedback.isCanceled():
            raise QgsProcessingException("Cancelled.")
        index = index_of.get(feature.id()) if index_of is not None else count
        if index is None or index >= units.n:
            raise QgsProcessingException(
                "The input layer changed while the algorithm ran. Run it again on an "
                "unchanging layer."
            )
        geometry = feature.geometry()
        if geometry.isNull() or geometry.isEmpty():
            continue
        shape = wkb.loads(bytes(geometry.asWkb()))
        if not shape.is_valid:
            shape = shape.buffer(0)  # GEOS predicates may fail on invalid polygons
        geometries[index] = shape
    return geometries


# ---------------------------------------------------------------------------
# Partitions (strata) and per-partition targets
# ---------------------------------------------------------------------------

# Per-partition target field parameters -> (core parameter, what it is).
PER_PARTITION_TARGETS = {
    "TARGET_WEIGHT_FIELD": ("desired_cluster_weight", "target weight"),
    "MIN_WEIGHT_FIELD": ("min_cluster_weight", "minimum weight"),
    "MAX_WEIGHT_FIELD": ("max_cluster_weight", "maximum weight"),
    "TARGET_RADIUS_FIELD": ("desired_cluster_radius", "target radius"),
}


def python_value(value: Any) -> Any:
    """A QGIS attribute value as plain Python; None for NULL."""
    if value is None:
        return None
    if isinstance(value, QVariant):
        return None if value.isNull() else value.value()
    return value


def _partition_key(value: Any) -> Any:
    """A hashable partition value; None when missing (NULL, NaN, blank text)."""
    value = python_value(value)
    if value is None:
        return None
    if isinstance(value, str):
        return value if value.strip() else None
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        return int(value) if value.is_integer() else value
    if isinstance(value, (bool, int)):
        return int(value)
    return str(value.toString()) if hasattr(value, "toString") else str(value)


def partition_keys(
    values: Sequence[Any],
    field_name: str,
    *,
    ids: Sequence[int] | None = None,
    what: str = "feature",
) -> np.ndarray:
    """The partition value of every unit (object array); QgsProcessingException on NULLs.

    Parameters
    ----------
    values : sequence
        Raw attribute values of the partition field, one per unit.
    field_name : str
        The field, for messages.
    ids : sequence of int, optional
        Feature ids, to list examples of units without a partition.
    what : str
        What a unit is ("feature", "partition polygon"), for messages.
    """
    keys, missing = _keys_and_missing(values)
    _refuse_missing_partitions(missing, len(values), field_name, ids, what)
    return keys


def _keys_and_missing(values: Sequence[Any]) -> tuple[np.ndarray, list[int]]:
    """The partition key of each value (object array) and the positions of missing ones."""
    keys = np.empty(len(values), dtype=object)
    missing: list[int] = []
    for index, value in enumerate(values):
        key = _partition_key(value)
        keys[index] = key
        if key is None:
            missing.append(index)
    return keys, missing


def _refuse_missing_partitions(
    missing: Sequence[int], total: int, field_name: str, ids: Sequence[int] | None, what: str
) -> None:
    """QgsProcessingException naming the units (positions ``missing``) without a partition."""
    if len(missing) and len(missing) == total:
        raise QgsProcessingException(
            f"The partition field '{field_name}' is NULL (or empty) for every {what} "
            f"({total}), so no {what} can be put in a partition. Choose the field that "
            "names each unit's stratum or area, fill it with the Field calculator, or leave "
            "PARTITION_FIELD empty to cluster without partitions."
        )
    if len(missing):
        examples = (
            f" ({what} ids {id_examples([ids[i] for i in missing[:EXAMPLE_IDS]])})"
            if ids is not None
            else ""
        )
        raise QgsProcessingException(
            f"{len(missing)} of {total} {what}s have no value (NULL or empty) in the "
            f"partition field '{field_name}'{examples}. Every unit needs a partition: fill "
            f"them (Field calculator, e.g. coalesce(\"{field_name}\", 'other')) or leave those "
            f'{what}s out (Extract by expression: "{field_name}" IS NOT NULL).'
        )


def unit_partitions(column: EncodedColumn, field_name: str, ids: Sequence[int]) -> Any:
    """The partition of every unit from its partition field, as a pandas Categorical.

    Each distinct value is checked and named once (:func:`partition_keys`);
    a unit costs a small integer.
    """
    keys, missing_values = _keys_and_missing(column.values)
    missing = (
        np.flatnonzero(np.isin(column.codes, missing_values)) if missing_values else np.empty(0)
    )
    _refuse_missing_partitions(missing, column.codes.size, field_name, ids, "feature")
    return partition_categories(column.codes, keys)


def unit_partition_targets(
    partitions: Any, columns: dict[str, tuple[str, EncodedColumn]]
) -> dict[Any, dict[str, float]]:
    """:func:`per_partition_targets` of units, looking at each distinct (partition, value) once."""
    targets: dict[Any, dict[str, float]] = {}
    partition_codes = np.asarray(partitions.codes, dtype=np.int64)
    for parameter, (field_name, column) in columns.items():
        n_values = max(len(column.values), 1)
        pairs = np.unique(partition_codes * n_values + column.codes)
        keys = partitions.categories[pairs // n_values].tolist()
        values = [column.values[i] for i in (pairs % n_values).tolist()]
        found = per_partition_targets(keys, {parameter: (field_name, values)})
        for key, by_name in found.items():
            targets.setdefault(key, {}).update(by_name)
    return targets


def partition_categories(codes: np.ndarray, values: Sequence[Any]) -> Any:
    """The partition of each unit, ``values[codes]``, as a pandas Categorical.

    ``values`` (from :func:`partition_keys`, e.g. one per partition polygon)
    may repeat; ``codes`` index into them. A Categorical stores a small
    integer per unit where an object array would hold a pointer per unit and
    core would hash every one of them.
    """
    import pandas as pd  # a core dependency, loaded by now

    value_codes, uniques = pd.factorize(np.asarray(values, dtype=object), sort=False)
    unit_codes = value_codes.astype(np.int32)[np.asarray(codes)]
    return pd.Categorical.from_codes(unit_codes, categories=pd.Index(uniques, dtype=object))


def present_partitions(partitions: Any) -> list[Any]:
    """The distinct partition values that some unit has (of a :func:`partition_categories`)."""
    counts = np.bincount(partitions.codes, minlength=len(partitions.categories))
    return partitions.categories[np.flatnonzero(counts)].tolist()


def partition_label(key: Any) -> str:
    """The name of a partition in IDs and messages (as core names it)."""
    from ..core.partitions import partition_name

    return partition_name(key)


def per_partition_targets(
    keys: Sequence[Any],
    columns: dict[str, tuple[str, Sequence[Any]]],
    *,
    what: str = "feature",
) -> dict[Any, dict[str, float]]:
    """Per-partition targets read from fields, one value per partition.

    Parameters
    ----------
    keys : sequence
        The partition of each row (feature).
    columns : dict
        ``{parameter name: (field name, value per row)}``, parameter names as
        in :data:`PER_PARTITION_TARGETS`.
    what : str
        What a row is, for messages.

    Returns
    -------
    dict
        ``{partition: {core parameter: value}}``; NULL values are skipped
        (the partition falls back to the constant parameter).

    Raises
    ------
    QgsProcessingException
        A non-numeric value, or different values within one partition (the
        message names the partition).
    """
    found: dict[Any, dict[str, set[float]]] = {}
    for parameter, (field_name, values) in columns.items():
        core_name, label = PER_PARTITION_TARGETS[parameter]
        for key, raw in zip(keys, values):
            value = python_value(raw)
            if value is None:
                continue
            number = _as_float(value)
            if number is None or not math.isfinite(number):
                raise QgsProcessingException(
                    f"The {label} field '{field_name}' ({parameter}) holds {value!r}, not a "
                    f"number, for partition '{partition_label(key)}'. Choose a numeric field "
                    f"or leave {parameter} empty."
                )
            found.setdefault(key, {}).setdefault(core_name, set()).add(number)
    targets: dict[Any, dict[str, float]] = {}
    for key, by_name in found.items():
        for core_name, numbers in by_name.items():
            if len(numbers) > 1:
                parameter = next(p for p, (c, _) in PER_PARTITION_TARGETS.items() if c == core_name)
                label = PER_PARTITION_TARGETS[parameter][1]
                field_name = columns[parameter][0]
                shown = ", ".join(f"{n:g}" for n in sorted(numbers)[:5])
                raise QgsProcessingException(
                    f"Partition '{partition_label(key)}' has {len(numbers)} different values in "
                    f"the {label} field '{field_name}' ({shown}). A per-partition target must be "
                    f"the same for every {what} of a partition: correct the field, or leave "
                    f"{parameter} empty to use the constant parameter."
                )
            targets.setdefault(key, {})[core_name] = numbers.pop()
    return targets


# ---------------------------------------------------------------------------
# Settings shared by the clustering algorithms
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ClusterSettings:
    """The targets and constraints of a clustering run, as the user set them."""

    target_weight: float
    target_radius: float
    weight_importance: float = 1.0
    min_weight: float | None = None
    max_weight: float | None = None
    max_radius: float | None = None
    contiguity: bool = True
    neighbour_distance: float | None = None
    bridge_distance: float | None = None
    max_passes: int = 10
    initial_trials: int = 100
    subsequent_trials: int = 20
    seed: int = 42
    n_jobs: int = 1

    @property
    def refines(self) -> bool:
        """True when core refines the clusters into guaranteed PSUs (and needs neighbours)."""
        return self.contiguity or self.min_weight is not None or self.max_radius is not None

    def passes_for(self, max_weight: float | None) -> int:
        """Extra passes only make sense with a maximum weight to split at."""
        return self.max_passes if max_weight is not None else 1

    def problem(self) -> str | None:
        """:func:`check_targets` of these settings."""
        return check_targets(
            self.target_weight,
            self.target_radius,
            self.max_weight,
            min_weight=self.min_weight,
            max_radius=self.max_radius,
        )

    def estimator_params(self, n_jobs: int) -> dict[str, Any]:
        """Keyword arguments of core's ``TunedClustering``."""
        return {
            "desired_cluster_weight": self.target_weight,
            "desired_cluster_radius": self.target_radius,
            "weight_importance_factor": self.weight_importance,
            "max_cluster_weight": self.max_weight,
            "max_passes": self.passes_for(self.max_weight),
            "initial_max_trials": self.initial_trials,
            "subsequent_max_trials": self.subsequent_trials,
            "n_jobs": n_jobs,
            "random_state": self.seed,
            "min_cluster_weight": self.min_weight,
            "max_cluster_radius": self.max_radius,
            "contiguity": self.contiguity,
            "bridge_distance": self.bridge_distance,
        }

    def report_items(self) -> dict[str, Any]:
        """The settings keyed by the parameter names users see (the report finds targets so)."""
        return {
            "TARGET_WEIGHT": self.target_weight,
            "TARGET_RADIUS": self.target_radius,
            "WEIGHT_IMPORTANCE": self.weight_importance,
            "MIN_WEIGHT": self.min_weight,
            "MAX_WEIGHT": self.max_weight,
            "MAX_RADIUS": self.max_radius,
            "CONTIGUITY": self.contiguity,
            "BRIDGE_DISTANCE": self.bridge_distance,
            "MAX_PASSES": self.passes_for(self.max_weight),
            "INITIAL_TRIALS": self.initial_trials,
            "SUBSEQUENT_TRIALS": self.subsequent_trials,
            "SEED": self.seed,
            "N_JOBS": self.n_jobs,
        }


def partition_parameters(
    keys: Sequence[Any],
    targets: dict[Any, dict[str, float]],
    settings: ClusterSettings,
) -> dict[Any, dict[str, Any]]:
    """Core's ``per_partition_params`` for the partitions in ``keys``, checked.

    Partitions of ``targets`` that hold no unit are dropped. A partition with
    its own maximum weight gets the extra passes; one without any maximum
    gets a single pass.

    Raises
    ------
    QgsProcessingException
        A partition whose targets are inconsistent (named in the message).
    """
    present = set(keys)
    overrides: dict[Any, dict[str, Any]] = {}
    for key, values in targets.items():
        if key not in present:
            continue
        target_weight = values.get("desired_cluster_weight", settings.target_weight)
        target_radius = values.get("desired_cluster_radius", settings.target_radius)
        max_weight = values.get("max_cluster_weight", settings.max_weight)
        min_weight = values.get("min_cluster_weight", settings.min_weight)
        problem = check_targets(
            target_weight,
            target_radius,
            max_weight,
            min_weight=min_weight,
            max_radius=settings.max_radius,
        )
        if problem:
            raise QgsProcessingException(
                f"Partition '{partition_label(key)}' (targets from the per-partition fields): "
                f"{problem}"
            )
        own = dict(values)
        if max_weight is not None and settings.max_weight is None:
            own["max_passes"] = settings.max_passes
        overrides[key] = own
    return overrides


# ---------------------------------------------------------------------------
# Running core
# ---------------------------------------------------------------------------


@dataclass
class ClusteringRun:
    """What :func:`run_clustering` returns: core's result in input order, and its summaries.

    Attributes
    ----------
    result : core PartitionedResult
        Per-unit arrays in the order of the units given.
    assignment : ClusterAssignment
    quality : dict
        Shares of clusters in range, contiguous, within the radius cap, ok;
        status counts (combined over partitions).
    best_k : int or None
        k chosen in the first pass (summed over partitions).
    report_result : object
        What the HTML report reads (clusters, trials, best_k, n_clusters).
    failed : dict of str to str
        Error message per failed partition (by name).
    partitioned : bool
    """

    result: Any
    assignment: ClusterAssignment
    quality: dict[str, Any]
    best_k: int | None
    report_result: Any
    failed: dict[str, str]
    partitioned: bool

    def share(self, key: str) -> float | None:
        value = self.quality.get(key)
        return float(value) if isinstance(value, (int, float, np.number)) else None

    def partition_notes(self, limit: int = 30) -> list[str]:
        """One line per partition (the first ``limit``), for the report."""
        if not self.partitioned:
            return []
        lines = []
        table = self.result.partitions
        for row in table.head(limit).itertuples(index=False):
            text = (
                f"Partition {partition_label(row.partition)}: {int(row.n_units):,} units, "
                f"weight {float(row.weight):,.1f}, {int(row.n_clusters)} clusters"
            )
            if row.status != "ok":
                text += f", FAILED: {_readable_error(row.error)}"
            lines.append(text)
        if len(table) > limit:
            lines.append(f"… and {len(table) - limit} more partitions.")
        return lines


def _readable_error(error: str | None) -> str:
    """core's "ClusteringInputError: message" as the message alone."""
    text = error or "unknown error"
    prefix = "ClusteringInputError: "
    return text[len(prefix) :] if text.startswith(prefix) else text


def in_order(order: np.ndarray | None, *arrays: Any) -> tuple[Any, ...]:
    """The arrays (None stays None) permuted to ``order`` (None: as they are)."""
    if order is None:
        return arrays
    return tuple(None if array_ is None else array_[order] for array_ in arrays)


def _inverse(order: np.ndarray) -> np.ndarray:
    inverse = np.empty_like(order)
    inverse[order] = np.arange(order.size)
    return inverse


def run_clustering(
    xy_metric: np.ndarray,
    weights: np.ndarray | None,
    partitions: np.ndarray | None,
    settings: ClusterSettings,
    feedback: QgsProcessingFeedback,
    *,
    per_partition_params: dict[Any, dict[str, Any]] | None = None,
    adjacency: Any = None,
    order: np.ndarray | None = None,
    progress_span: tuple[float, float] = (10.0, 88.0),
) -> ClusteringRun:
    """Cluster the units with core (``cluster_partitions``), partition by partition.

    Parameters
    ----------
    xy_metric : ndarray (n, 2)
        Coordinates in metres.
    weights : ndarray (n,) or None
    partitions : ndarray (n,) of object, pandas.Categorical or None
        Partition value per unit (None: one run over all units, IDs without
        prefix); a Categorical (:func:`partition_categories`) costs a small
        integer per unit instead of a Python object.
    settings : ClusterSettings
    per_partition_params : dict, optional
        From :func:`partition_parameters`.
    adjacency : scipy.sparse matrix (n, n) or core ``PerPartition``, optional
        Neighbour graph for the guaranteed-PSU refinement (a ``PerPartition``
        makes each partition's graph from its units' indices).
    order : ndarray of int, optional
        Order in which core sees the units (:func:`canonical_order`): the
        arrays given are already in it (:func:`in_order`; unit ``i`` of them
        is unit ``order[i]`` of the layer), the result comes back in the
        layer's order. Only the caller's permuted arrays exist, not two copies.

    Raises
    ------
    QgsProcessingException
        Bad input, cancellation, or every partition failed. A failure of
        some partitions only is logged (by name) and their units get the
        status "failed".
    """
    from ..core.partitions import PerPartition, cluster_partitions

    if order is not None:
        if isinstance(adjacency, PerPartition):
            adjacency = PerPartition(lambda rows, make=adjacency.make: make(order[rows]))
        elif adjacency is not None:
            adjacency = adjacency.tocsr()[order][:, order]
    partitioned = partitions is not None
    # Threads go to partitions when there are several, to k trials otherwise.
    params = settings.estimator_params(n_jobs=1 if partitioned else settings.n_jobs)
    progress = (PartitionProgress if partitioned else CoreProgress)(feedback, progress_span)
    with core_errors_as_processing_exceptions():
        result = cluster_partitions(
            xy_metric,
            weights,
            partitions,
            params=params,
            per_partition_params=per_partition_params or None,
            n_jobs=settings.n_jobs if partitioned else 1,
            # With partitions: progress per partition. Without: core's own
            # messages (one per trial and pass), given to the estimator.
            progress=progress if partitioned else None,
            is_cancelled=progress.is_cancelled,
            fit_kwargs={"adjacency": adjacency} if adjacency is not None else None,
            estimator_factory=None if partitioned else _ReportingEstimator.factory(progress),
            # Per unit only the combined result is kept: a country is not held twice.
            keep_unit_results=False,
        )
    if order is not None:
        inverse = _inverse(order)
        result = replace(
            result,
            labels=result.labels[inverse],
            partition_codes=(
                None if result.partition_codes is None else result.partition_codes[inverse]
            ),
            unit_fallbacks=[(order[rows], *rest) for rows, *rest in result.unit_fallbacks],
        )
        del inverse
    failed_outcomes = [outcome for outcome in result.outcomes.values() if not outcome.ok]
    failed = {outcome.name: _readable_error(outcome.error) for outcome in failed_outcomes}
    if failed and len(failed) == len(result.outcomes):
        if not partitioned:
            raise QgsProcessingException(next(iter(failed.values())))
        listed = "; ".join(f"{name}: {message}" for name, message in list(failed.items())[:5])
        raise QgsProcessingException(
            f"Every partition failed ({len(failed)}): {listed}. Fix the data or the targets "
            "of these partitions."
        )
    for outcome in failed_outcomes:
        feedback.reportError(
            f"Partition '{outcome.name}' failed: {failed[outcome.name]} Its {outcome.n_units} "
            f"units get the status '{STATUS_FAILED}' and no cluster; the other partitions "
            "are clustered.",
            False,
        )
    ok = [outcome for outcome in result.outcomes.values() if outcome.ok]
    if partitioned:
        best_k = int(sum(int(outcome.result.best_k) for outcome in ok))
        report_result = _ReportView(result.clusters, result.trials, result.n_clusters, None)
    else:
        best_k = int(ok[0].result.best_k)
        report_result = ok[0].result
    return ClusteringRun(
        result=result,
        assignment=ClusterAssignment.from_result(result),
        quality=combined_quality(result),
        best_k=best_k,
        report_result=report_result,
        failed=failed,
        partitioned=partitioned,
    )


class _ReportingEstimator:
    """A TunedClustering whose fit reports to a given progress callable."""

    def __init__(self, estimator: Any, progress: Callable[..., None]) -> None:
        self.estimator = estimator
        self.progress = progress

    @classmethod
    def factory(cls, progress: Callable[..., None]) -> Callable[..., _ReportingEstimator]:
        from ..core.tuned import TunedClustering

        return lambda **params: cls(TunedClustering(**params), progress)

    def fit(self, xy: np.ndarray, weights: np.ndarray | None = None, **kwargs: Any) -> Any:
        kwargs["progress"] = self.progress
        return self.estimator.fit(xy, weights, **kwargs)


@dataclass
class _ReportView:
    """The parts of a partitioned result that the HTML report reads."""

    clusters: Any
    trials: Any
    n_clusters: int
    best_k: int | None


# Quality shares that become numeric outputs (core's result.quality keys).
QUALITY_SHARES = ("share_in_range", "share_contiguous", "share_within_radius", "share_ok")


def combined_quality(result: Any) -> dict[str, Any]:
    """core's ``quality`` of each partition combined into one dict.

    Shares are averaged with each partition's number of clusters as weight
    (they are shares of clusters); count mappings (``status_counts``) are
    summed; other values are kept when all partitions agree, else listed.
    Failed partitions are counted under ``failed_partitions``.
    """
    parts = [
        (outcome.n_clusters, getattr(outcome.result, "quality", None) or {})
        for outcome in result.outcomes.values()
        if outcome.ok
    ]
    combined: dict[str, Any] = {}
    total = sum(n for n, _ in parts)
    keys: list[str] = []
    for _, quality in parts:
        keys.extend(k for k in quality if k not in keys)
    for key in keys:
        values = [(n, quality[key]) for n, quality in parts if key in quality]
        first = values[0][1]
        if key == "bridges":
            combined[key] = int(sum(int(v) for _, v in values))
        elif isinstance(first, dict):
            counts: dict[str, float] = {}
            for _, mapping in values:
                for name, count in mapping.items():
                    counts[str(name)] = counts.get(str(name), 0) + count
            combined[key] = dict(sorted(counts.items()))
        elif (
            isinstance(first, (int, float, np.number))
            and not isinstance(first, bool)
            and (key.startswith("share"))
        ):
            weight = sum(n for n, _ in values)
            combined[key] = (
                float(sum(n * float(v) for n, v in values) / weight) if weight else float(first)
            )
        else:
            distinct = list(dict.fromkeys(str(v) for _, v in values))
            combined[key] = first if len(distinct) == 1 else "; ".join(distinct[:5])
    if len(parts) > 1:
        combined["n_clusters"] = total
    failed = result.failed
    if failed:
        combined["failed_partitions"] = f"{len(failed)} of {len(result.outcomes)}: " + ", ".join(
            partition_label(key) for key in list(failed)[:10]
        )
    return combined


# ---------------------------------------------------------------------------
# The base of the clustering algorithms
# ---------------------------------------------------------------------------


class TunedClusteringAlgorithmBase(QgsProcessingAlgorithm):
    """Parameters, checks and outputs shared by the vector and raster clustering algorithms.

    Subclasses add their input parameters, call the ``_add_*`` methods in
    ``initAlgorithm`` and use :meth:`_settings`, :func:`run_clustering` and
    :meth:`_write_cluster_outputs` in ``processAlgorithm``.
    """

    PARTITION_FIELD = "PARTITION_FIELD"
    TARGET_WEIGHT = "TARGET_WEIGHT"
    TARGET_RADIUS = "TARGET_RADIUS"
    WEIGHT_IMPORTANCE = "WEIGHT_IMPORTANCE"
    MIN_WEIGHT = "MIN_WEIGHT"
    MAX_WEIGHT = "MAX_WEIGHT"
    MAX_RADIUS = "MAX_RADIUS"
    CONTIGUITY = "CONTIGUITY"
    MAX_PASSES = "MAX_PASSES"
    TARGET_WEIGHT_FIELD = "TARGET_WEIGHT_FIELD"
    MIN_WEIGHT_FIELD = "MIN_WEIGHT_FIELD"
    MAX_WEIGHT_FIELD = "MAX_WEIGHT_FIELD"
    TARGET_RADIUS_FIELD = "TARGET_RADIUS_FIELD"
    NEIGHBOUR_DISTANCE = "NEIGHBOUR_DISTANCE"
    BRIDGE_DISTANCE = "BRIDGE_DISTANCE"
    INITIAL_TRIALS = "INITIAL_TRIALS"
    SUBSEQUENT_TRIALS = "SUBSEQUENT_TRIALS"
    DISTANCE_CRS = "DISTANCE_CRS"
    SEED = "SEED"
    N_JOBS = "N_JOBS"
    OUTPUT = "OUTPUT"
    OUTPUT_CLUSTERS = "OUTPUT_CLUSTERS"
    OUTPUT_REPORT = "OUTPUT_REPORT"
    N_CLUSTERS = "N_CLUSTERS"
    BEST_K = "BEST_K"
    SHARE_IN_RANGE = "SHARE_IN_RANGE"
    SHARE_CONTIGUOUS = "SHARE_CONTIGUOUS"
    SHARE_WITHIN_RADIUS = "SHARE_WITHIN_RADIUS"
    SHARE_OK = "SHARE_OK"

    #: Search words of what both algorithms do; each adds those of its input.
    SHARED_TAGS = (
        "cluster",
        "psu",
        "survey",
        "sampling",
        "kmeans",
        "population",
        "strata",
        "partition",
        "contiguous",
    )
    INPUT_TAGS: tuple[str, ...] = ()

    def __init__(self) -> None:
        super().__init__()
        # Keeps layer post-processors alive until QGIS runs them (main thread).
        self._post_processors: list = []

    def group(self) -> str:
        return "Clustering"

    def groupId(self) -> str:
        return "clustering"

    def tags(self) -> list[str]:
        return [*self.SHARED_TAGS, *self.INPUT_TAGS]

    def icon(self) -> QIcon:
        return QIcon(str(ICON_PATH))

    def canExecute(self) -> tuple[bool, str]:
        problem = dependencies_problem()
        return (False, problem) if problem else (True, "")

    # -- parameters ---------------------------------------------------------

    def _add_target_parameters(self) -> None:
        """Targets and guaranteed-PSU constraints (the main part of the dialog)."""
        double = QgsProcessingParameterNumber.Double
        self.addParameter(
            QgsProcessingParameterNumber(
                self.TARGET_WEIGHT,
                "Target cluster weight",
                double,
                defaultValue=240.0,
                minValue=0.0,
            )
        )
        self.addParameter(
            QgsProcessingParameterNumber(
                self.TARGET_RADIUS,
                "Target cluster radius (metres)",
                double,
                defaultValue=1000.0,
                minValue=0.0,
            )
        )
        self.addParameter(
            QgsProcessingParameterNumber(
                self.WEIGHT_IMPORTANCE,
                "Weight importance (vs radius)",
                double,
                defaultValue=1.0,
                minValue=0.0,
            )
        )
        self.addParameter(
            QgsProcessingParameterNumber(
                self.MIN_WEIGHT,
                "Minimum cluster weight (empty: no lower bound)",
                double,
                optional=True,
                minValue=0.0,
            )
        )
        self.addParameter(
            QgsProcessingParameterNumber(
                self.MAX_WEIGHT,
                "Maximum cluster weight (empty: no upper bound)",
                double,
                optional=True,
                minValue=0.0,
            )
        )
        self.addParameter(
            QgsProcessingParameterNumber(
                self.MAX_RADIUS,
                "Maximum cluster radius, metres (empty: no cap)",
                double,
                optional=True,
                minValue=0.0,
            )
        )
        self.addParameter(
            QgsProcessingParameterBoolean(
                self.CONTIGUITY, "Clusters must be contiguous (neighbouring units)", True
            )
        )
        self.addParameter(
            QgsProcessingParameterNumber(
                self.MAX_PASSES,
                "Maximum passes (with a maximum weight)",
                QgsProcessingParameterNumber.Integer,
                defaultValue=10,
                minValue=1,
            )
        )
        for name, decimals in (
            (self.TARGET_WEIGHT, 2),
            (self.TARGET_RADIUS, 0),
            (self.WEIGHT_IMPORTANCE, 2),
            (self.MIN_WEIGHT, 2),
            (self.MAX_WEIGHT, 2),
            (self.MAX_RADIUS, 0),
        ):
            self.parameterDefinition(name).setMetadata({"widget_wrapper": {"decimals": decimals}})

    def _add_per_partition_fields(self, parent: str, where: str) -> None:
        """Optional numeric fields giving per-partition targets (read from ``parent``)."""
        labels = {
            self.TARGET_WEIGHT_FIELD: "target weight",
            self.MIN_WEIGHT_FIELD: "minimum weight",
            self.MAX_WEIGHT_FIELD: "maximum weight",
            self.TARGET_RADIUS_FIELD: "target radius (metres)",
        }
        for name, label in labels.items():
            self.addParameter(
                QgsProcessingParameterField(
                    name,
                    f"Per-partition {label}, from a field",
                    parentLayerParameterName=parent,
                    type=QgsProcessingParameterField.Numeric,
                    optional=True,
                )
            )

    def _add_advanced_parameters(self) -> None:
        integer = QgsProcessingParameterNumber.Integer
        advanced = [
            QgsProcessingParameterNumber(
                self.NEIGHBOUR_DISTANCE,
                "Neighbour distance, metres (empty: inferred)",
                QgsProcessingParameterNumber.Double,
                optional=True,
                minValue=0.0,
            ),
            QgsProcessingParameterNumber(
                self.BRIDGE_DISTANCE,
                "Bridge gaps to light islands, metres (empty: never)",
                QgsProcessingParameterNumber.Double,
                optional=True,
                minValue=0.0,
            ),
            QgsProcessingParameterNumber(
                self.INITIAL_TRIALS,
                "Trials in the first pass",
                integer,
                defaultValue=100,
                minValue=1,
            ),
            QgsProcessingParameterNumber(
                self.SUBSEQUENT_TRIALS,
                "Trials per cluster split in later passes",
                integer,
                defaultValue=20,
                minValue=1,
            ),
            QgsProcessingParameterCrs(
                self.DISTANCE_CRS,
                "Distance CRS in metres (empty: layer CRS or UTM zone)",
                optional=True,
            ),
            QgsProcessingParameterNumber(
                self.SEED, "Random seed", integer, defaultValue=42, minValue=0
            ),
            QgsProcessingParameterNumber(
                self.N_JOBS,
                "Threads (partitions in parallel, or trials without partitions)",
                integer,
                defaultValue=1,
                minValue=1,
            ),
        ]
        for parameter in advanced:
            parameter.setFlags(parameter.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
            self.addParameter(parameter)

    def _add_cluster_outputs(self) -> None:
        """OUTPUT_CLUSTERS, OUTPUT_REPORT and the numeric outputs (after OUTPUT)."""
        self.addParameter(
            QgsProcessingParameterFeatureSink(
                self.OUTPUT_CLUSTERS, "Clusters", QgsProcessing.TypeVectorPolygon
            )
        )
        # An .html file destination also adds a QgsProcessingOutputHtml output,
        # so the report opens in the Results Viewer.
        self.addParameter(
            QgsProcessingParameterFileDestination(
                self.OUTPUT_REPORT,
                "Report",
                "HTML files (*.html)",
                optional=True,
                createByDefault=True,
            )
        )
        for name, label in (
            (self.N_CLUSTERS, "Number of clusters"),
            (self.BEST_K, "k chosen in the first pass (summed over partitions)"),
            (self.SHARE_IN_RANGE, "Share of clusters in the weight range"),
            (self.SHARE_CONTIGUOUS, "Share of contiguous clusters"),
            (self.SHARE_WITHIN_RADIUS, "Share of clusters within the maximum radius"),
            (self.SHARE_OK, "Share of clusters meeting every constraint"),
        ):
            self.addOutput(QgsProcessingOutputNumber(name, label))

    # -- checks and settings --------------------------------------------------

    def checkParameterValues(self, parameters: dict, context: QgsProcessingContext):
        problem = self._settings(parameters, context).problem()
        if problem:
            return False, problem
        return super().checkParameterValues(parameters, context)

    def _optional_double(
        self, parameters: dict, name: str, context: QgsProcessingContext
    ) -> float | None:
        if optional_number(parameters, name) is None:
            return None
        return self.parameterAsDouble(parameters, name, context)

    def _settings(self, parameters: dict, context: QgsProcessingContext) -> ClusterSettings:
        """The targets and constraints as set (not checked: see ClusterSettings.problem)."""
        contiguity = (
            True
            if parameters.get(self.CONTIGUITY) is None
            else self.parameterAsBoolean(parameters, self.CONTIGUITY, context)
        )
        return ClusterSettings(
            target_weight=self.parameterAsDouble(parameters, self.TARGET_WEIGHT, context),
            target_radius=self.parameterAsDouble(parameters, self.TARGET_RADIUS, context),
            weight_importance=self.parameterAsDouble(parameters, self.WEIGHT_IMPORTANCE, context),
            min_weight=self._optional_double(parameters, self.MIN_WEIGHT, context),
            max_weight=self._optional_double(parameters, self.MAX_WEIGHT, context),
            max_radius=self._optional_double(parameters, self.MAX_RADIUS, context),
            contiguity=contiguity,
            neighbour_distance=self._optional_double(parameters, self.NEIGHBOUR_DISTANCE, context),
            bridge_distance=self._optional_double(parameters, self.BRIDGE_DISTANCE, context),
            max_passes=self.parameterAsInt(parameters, self.MAX_PASSES, context),
            initial_trials=self.parameterAsInt(parameters, self.INITIAL_TRIALS, context),
            subsequent_trials=self.parameterAsInt(parameters, self.SUBSEQUENT_TRIALS, context),
            seed=self.parameterAsInt(parameters, self.SEED, context),
            n_jobs=self.parameterAsInt(parameters, self.N_JOBS, context),
        )

    def _checked_settings(self, parameters: dict, context: QgsProcessingContext) -> ClusterSettings:
        require_dependencies()
        settings = self._settings(parameters, context)
        problem = settings.problem()
        if problem:
            raise QgsProcessingException(problem)
        if settings.neighbour_distance is not None and not settings.neighbour_distance > 0:
            raise QgsProcessingException(
                "NEIGHBOUR_DISTANCE must be greater than 0 metres; leave it empty to infer it."
            )
        if settings.bridge_distance is not None and not settings.bridge_distance > 0:
            raise QgsProcessingException(
                "BRIDGE_DISTANCE must be greater than 0 metres; leave it empty to never bridge "
                "gaps."
            )
        if settings.bridge_distance is not None and settings.min_weight is None:
            raise QgsProcessingException(
                "BRIDGE_DISTANCE links pieces lighter than the minimum weight, but MIN_WEIGHT "
                "is empty. Set MIN_WEIGHT, or leave BRIDGE_DISTANCE empty."
            )
        return settings

    def _per_partition_fields(
        self, parameters: dict, context: QgsProcessingContext
    ) -> dict[str, str]:
        """{parameter: field name} of the per-partition target fields that are set."""
        fields = {}
        for name in PER_PARTITION_TARGETS:
            value = self.parameterAsString(parameters, name, context)
            if value:
                fields[name] = value
        return fields

    # -- outputs --------------------------------------------------------------

    def _write_cluster_outputs(
        self,
        parameters: dict,
        context: QgsProcessingContext,
        feedback: QgsProcessingFeedback,
        run: ClusteringRun,
        polygons: Sequence[QgsGeometry | bytes | None],
        crs: QgsCoordinateReferenceSystem,
        units_dest_id: str,
        report_parameters: dict,
        notes: Sequence[str],
        closing: BackgroundSink | None = None,
    ) -> dict[str, Any]:
        """OUTPUT_CLUSTERS, styles, report and numeric outputs; the results dict.

        ``closing`` is OUTPUT being closed: it must be closed before
        OUTPUT_CLUSTERS is written into the same file (two writers would lock
        each other out of a GeoPackage).
        """
        if closing is not None and not self._separate_outputs(parameters, context):
            closing.wait()
        clusters_dest_id = write_cluster_polygons(
            self, parameters, self.OUTPUT_CLUSTERS, context, polygons, run.assignment, crs
        )
        feedback.setProgress(98)
        style_output_on_load(self._post_processors, context, units_dest_id)
        style_output_on_load(
            self._post_processors, context, clusters_dest_id, "cluster_id", fill_opacity=0.35
        )
        log_quality(run, feedback)
        results: dict[str, Any] = {
            self.OUTPUT: units_dest_id,
            self.OUTPUT_CLUSTERS: clusters_dest_id,
            self.N_CLUSTERS: int(run.result.n_clusters),
            self.BEST_K: run.best_k,
            self.SHARE_IN_RANGE: run.share("share_in_range"),
            self.SHARE_CONTIGUOUS: run.share("share_contiguous"),
            self.SHARE_WITHIN_RADIUS: run.share("share_within_radius"),
            self.SHARE_OK: run.share("share_ok"),
        }
        report_path = self.parameterAsFileOutput(parameters, self.OUTPUT_REPORT, context)
        if report_path:
            all_notes = list(notes)
            all_notes += [
                f"Partition '{name}' failed: {message} Its units have the status "
                f"'{STATUS_FAILED}' and no cluster."
                for name, message in run.failed.items()
            ]
            all_notes += run.partition_notes()
            write_report(
                report_path,
                run.report_result,
                report_parameters,
                title=f"{self.displayName()} report",
                quality=run.quality or None,
                notes=all_notes or None,
            )
            results[self.OUTPUT_REPORT] = report_path
        feedback.setProgress(100)
        return results

    def _separate_outputs(self, parameters: dict, context: QgsProcessingContext) -> bool:
        """True when OUTPUT and OUTPUT_CLUSTERS certainly go to different files (or memory)."""
        files = [
            _destination_file(self.parameterAsOutputLayer(parameters, name, context))
            for name in (self.OUTPUT, self.OUTPUT_CLUSTERS)
        ]
        if any(f is False for f in files):
            return False
        return files[0] is None or files[1] is None or files[0] != files[1]


def _destination_file(destination: str) -> str | None | bool:
    """The file an output destination writes to; None for memory; False when unknown."""
    import os
    import re

    if not destination:
        return False
    if destination.startswith("memory:"):
        return None
    if destination.startswith("ogr:"):
        match = re.search(r"dbname='((?:[^']|'')*)'", destination)
        return os.path.realpath(match.group(1).replace("''", "'")) if match else False
    if re.match(r"^[A-Za-z][\w+.-]+:(?![\\/])", destination):
        return False  # another provider (postgis:, spatialite:...): do not guess
    return os.path.realpath(destination.split("|")[0])


def log_quality(run: ClusteringRun, feedback: QgsProcessingFeedback) -> None:
    """One log line with the shares and status counts."""
    names = {
        "share_in_range": "in weight range",
        "share_contiguous": "contiguous",
        "share_within_radius": "within radius cap",
        "share_ok": "ok",
    }
    parts = [
        f"{label} {run.share(key):.1%}"
        for key, label in names.items()
        if run.share(key) is not None
    ]
    counts = run.quality.get("status_counts")
    if isinstance(counts, dict) and counts:
        parts.append("status: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    if run.quality.get("bridges"):
        parts.append(f"{run.quality['bridges']} gaps bridged (BRIDGE_DISTANCE)")
    feedback.pushInfo(
        f"{run.result.n_clusters} clusters" + (f"; {'; '.join(parts)}." if parts else ".")
    )
