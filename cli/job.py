"""Cluster the units of one partition: the unit of work of every executor.

:func:`cluster_units` takes a GeoDataFrame (one partition's units, or a whole
layer without partitions), projects it to a metric CRS, fits the engine
through :func:`tuned_grid_clustering.core.partitions.fit_partition` and
returns the two output layers plus a manifest entry. ``tgc cluster`` calls it
once per partition (in threads), ``tgc batch`` once per Dask task and the
AWS Lambda handler once per invocation, so all three give the same clusters
for the same data, settings and seed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ..core.errors import ClusteringCancelled, ClusteringInputError
from ..core.partitions import (
    STATUS_FAILED,
    STATUS_OK,
    fit_partition,
    partition_name,
    prefixed_cluster_ids,
)
from ..core.tuned import CLUSTER_COLUMNS as ENGINE_CLUSTER_COLUMNS
from .settings import RunSettings

# Columns added to every unit.
UNIT_COLUMNS = (
    "cluster_id",
    "cluster_weight",
    "cluster_radius_m",
    "cluster_pass",
    "cluster_status",
)
# Columns of the clusters layer (plus the geometry), in this order: the engine's.
CLUSTER_COLUMNS = ("partition", *ENGINE_CLUSTER_COLUMNS)


@dataclass
class JobOutput:
    """The outputs of one partition.

    Attributes
    ----------
    units : GeoDataFrame
        The input units, same rows and order, plus :data:`UNIT_COLUMNS`
        (null for a failed partition), in the input CRS.
    clusters : GeoDataFrame
        One polygon per cluster, in the input CRS (empty when failed).
    entry : dict
        The partition's manifest entry: partition, status, error, seconds,
        n_units, weight, n_clusters, seed, metric_crs, params.
    """

    units: Any
    clusters: Any
    entry: dict[str, Any]

    @property
    def ok(self) -> bool:
        return self.entry["status"] == STATUS_OK


def _json_value(value: Any) -> Any:
    """A partition value as JSON (numpy scalars -> Python)."""
    if hasattr(value, "item"):
        return value.item()
    return value


def resolve_metric_crs(units: Any, setting: str) -> Any:
    """The metric CRS to cluster in.

    ``"auto"`` follows :func:`~tuned_grid_clustering.core.projection.metric_crs_for`
    (the rule of the Processing algorithms): the layer's CRS when it is
    projected in metres, else the UTM zone of the units' centre. Anything
    else must be a projected CRS.
    """
    from pyproj import CRS

    from ..core.projection import metric_crs_for

    if setting == "auto":
        bounds = units.geometry.bounds.to_numpy(dtype=float)
        centres = np.column_stack(
            [(bounds[:, 0] + bounds[:, 2]) / 2.0, (bounds[:, 1] + bounds[:, 3]) / 2.0]
        )
        return metric_crs_for(centres, units.crs)
    try:
        crs = CRS.from_user_input(setting)
    except Exception as exc:  # pyproj's CRSError
        raise ClusteringInputError(
            f'crs: {setting!r} is not a CRS pyproj knows ({exc}). Use "auto" or e.g. "EPSG:3121".'
        ) from exc
    if not crs.is_projected:
        raise ClusteringInputError(
            f"crs: {setting!r} is not a projected CRS; radii need metres. "
            'Use "auto" (UTM of the centre) or a projected CRS such as "EPSG:3121".'
        )
    return crs


def _override_values(units: Any, settings: RunSettings, name: str) -> dict[str, Any]:
    """This partition's own parameters from the per-partition target fields."""
    overrides: dict[str, Any] = {}
    for param, field_name in settings.override_fields.items():
        values = pd.unique(units[field_name].dropna())
        if len(values) > 1:
            shown = ", ".join(str(v) for v in values[:5])
            raise ClusteringInputError(
                f"partition {name}: field {field_name!r} has {len(values)} different values "
                f"({shown}); a per-partition target needs one value per partition. "
                "Make the field constant within each partition."
            )
        if len(values) == 1:
            value = _json_value(values[0])
            if param in ("max_passes", "initial_max_trials", "subsequent_max_trials"):
                value = int(value)
            else:
                value = float(value)
            overrides[param] = value
    return overrides


def _unit_coordinates(units: Any, metric_crs: Any) -> tuple[Any, Any]:
    """(geometries in the metric CRS, (n, 2) array of their centres)."""
    geometry = units.geometry
    bad = geometry.isna() | geometry.is_empty
    if bad.any():
        raise ClusteringInputError(
            f"{int(bad.sum())} of {len(units)} units have no geometry (NULL or empty). "
            "Fix or drop these units."
        )
    projected = geometry.to_crs(metric_crs)
    kinds = set(projected.geom_type.unique())
    centres = projected if kinds <= {"Point"} else projected.centroid
    xy = np.column_stack([centres.x.to_numpy(float), centres.y.to_numpy(float)])
    if not np.isfinite(xy).all():
        raise ClusteringInputError(
            "Some units' coordinates are not finite after projecting to the metric CRS. "
            "Check the layer's CRS and geometries."
        )
    return projected, xy


def _weights(units: Any, settings: RunSettings) -> np.ndarray | None:
    if settings.weight_field is None:
        return None
    column = units[settings.weight_field]
    try:
        return pd.to_numeric(column, errors="raise").to_numpy(dtype=float, na_value=np.nan)
    except (TypeError, ValueError) as exc:
        raise ClusteringInputError(
            f"The weight field {settings.weight_field!r} is not numeric ({exc}). "
            "Choose a numeric field."
        ) from exc


def _cluster_geometries(projected: Any, ids: np.ndarray, shape: str) -> Any:
    """One polygon per cluster ID, in the metric CRS (a GeoSeries indexed by ID)."""
    import geopandas as gpd

    frame = gpd.GeoDataFrame({"cluster_id": ids}, geometry=projected.to_numpy(), crs=projected.crs)
    if shape == "auto":
        shape = "hull" if set(projected.geom_type.unique()) <= {"Point"} else "union"
    merged = frame.dissolve(by="cluster_id", sort=False).geometry
    if shape == "hull":
        merged = merged.convex_hull
    # A cluster of one or two points (or collinear ones) has no area: give it
    # a 1 m buffer so the clusters layer holds polygons only.
    flat = merged.area <= 0
    if flat.any():
        merged = merged.where(~flat, merged[flat].buffer(1.0))
    return merged


def cluster_units(
    units: Any,
    partition: Hashable | None,
    settings: RunSettings,
    *,
    progress: Callable[..., Any] | None = None,
    is_cancelled: Callable[[], bool] | None = None,
    estimator_factory: Callable[..., Any] | None = None,
) -> JobOutput:
    """Cluster one partition's units; a failure is reported, never raised.

    Parameters
    ----------
    units : GeoDataFrame
        The partition's units (points or polygons), any CRS.
    partition : hashable or None
        The partition value. None clusters the layer as a whole: the seed is
        used unchanged and cluster IDs get no partition prefix.
    settings : RunSettings
    progress, is_cancelled, estimator_factory : optional
        Passed to :func:`~tuned_grid_clustering.core.partitions.fit_partition`.

    Returns
    -------
    JobOutput
        ``entry["status"]`` is ``"ok"`` or ``"failed"`` (with ``error``).

    Raises
    ------
    ClusteringCancelled
        When ``is_cancelled`` returns True.
    """
    import geopandas as gpd

    started = time.perf_counter()
    name = "" if partition is None else partition_name(partition)
    units = units.reset_index(drop=True)
    entry: dict[str, Any] = {
        "partition": name if partition is not None else None,
        "partition_value": _json_value(partition),
        "status": STATUS_FAILED,
        "error": None,
        "n_units": int(len(units)),
        "weight": None,
        "n_clusters": 0,
        "seconds": 0.0,
        "seed": None,
        "metric_crs": None,
        "params": None,
    }
    empty_clusters = gpd.GeoDataFrame(
        {column: [] for column in CLUSTER_COLUMNS}, geometry=[], crs=units.crs
    )

    def failed(message: str) -> JobOutput:
        entry["error"] = message
        entry["seconds"] = round(time.perf_counter() - started, 3)
        out = units.copy()
        for column in UNIT_COLUMNS:
            out[column] = None
        return JobOutput(out, empty_clusters, entry)

    try:
        if len(units) == 0:
            raise ClusteringInputError("The partition has no units.")
        missing = [f for f in settings.fields if f not in units.columns]
        if missing:
            raise ClusteringInputError(
                f"No field {', '.join(repr(m) for m in missing)} in the layer. "
                "Check the field names."
            )
        if units.crs is None:
            if settings.input_crs is None:
                raise ClusteringInputError(
                    "The layer has no CRS. Set the input CRS (--input-crs EPSG:4326, "
                    'or "input_crs" in the settings).'
                )
            units = units.set_crs(settings.input_crs)
        metric_crs = resolve_metric_crs(units, settings.crs)
        entry["metric_crs"] = metric_crs.to_string()
        projected, xy = _unit_coordinates(units, metric_crs)
        weights = _weights(units, settings)
        entry["weight"] = float(np.nansum(weights)) if weights is not None else float(len(units))
        overrides = _override_values(units, settings, name)
    except ClusteringCancelled:
        raise
    except Exception as exc:  # noqa: BLE001 - the partition fails alone
        return failed(f"{type(exc).__name__}: {exc}")

    outcome = fit_partition(
        xy,
        weights,
        partition,
        params=settings.params,
        overrides=overrides,
        progress=progress,
        is_cancelled=is_cancelled,
        estimator_factory=estimator_factory,
        derive_seed=partition is not None,
    )
    entry["seed"] = outcome.seed
    entry["params"] = {key: _json_value(value) for key, value in outcome.params.items()}
    if not outcome.ok:
        return failed(outcome.error or "unknown error")

    try:
        result = outcome.result
        ids = np.asarray(result.cluster_ids, dtype=object)
        table = result.clusters.reset_index(drop=True)
        table_ids = table["cluster_id"].astype(object).to_numpy()
        if partition is not None:
            ids = prefixed_cluster_ids(partition, ids)
            table_ids = prefixed_cluster_ids(partition, table_ids)
        by_id = pd.DataFrame(
            {
                "weight": table["weight"].to_numpy(float),
                "radius_m": table["radius_m"].to_numpy(float),
                "status": table["status"].astype(str).to_numpy(object),
            },
            index=pd.Index(table_ids, dtype=object),
        )
        out = units.copy()
        out["cluster_id"] = pd.array(ids, dtype=object)
        out["cluster_weight"] = by_id["weight"].reindex(ids).to_numpy()
        out["cluster_radius_m"] = by_id["radius_m"].reindex(ids).to_numpy()
        out["cluster_pass"] = np.asarray(result.cluster_pass, dtype=np.int64)
        out["cluster_status"] = by_id["status"].reindex(ids).to_numpy()

        shapes = _cluster_geometries(projected, ids, settings.cluster_shape)
        shapes = shapes.reindex(table_ids)
        from pyproj import Transformer

        output_crs = units.crs
        to_output = Transformer.from_crs(metric_crs, output_crs, always_xy=True)
        centre_x, centre_y = to_output.transform(
            table["centre_x"].to_numpy(float), table["centre_y"].to_numpy(float)
        )
        clusters = gpd.GeoDataFrame(
            {
                "partition": [name if partition is not None else None] * len(table),
                "cluster_id": table_ids,
                "weight": table["weight"].to_numpy(float),
                "radius_m": table["radius_m"].to_numpy(float),
                "n_units": table["n_units"].to_numpy(np.int64),
                "pass": table["pass"].to_numpy(np.int64),
                "centre_x": np.asarray(centre_x, dtype=float),
                "centre_y": np.asarray(centre_y, dtype=float),
                "status": table["status"].astype(str).to_numpy(object),
            },
            geometry=shapes.to_numpy(),
            crs=metric_crs,
        ).to_crs(output_crs)
    except ClusteringCancelled:
        raise
    except Exception as exc:  # noqa: BLE001 - the partition fails alone
        return failed(f"{type(exc).__name__}: {exc}")

    entry["status"] = STATUS_OK
    entry["n_clusters"] = int(len(table))
    entry["fit_seconds"] = round(outcome.seconds, 3)
    entry["seconds"] = round(time.perf_counter() - started, 3)
    return JobOutput(out, clusters, entry)
