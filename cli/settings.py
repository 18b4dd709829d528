"""The settings of one clustering run, validated once, the same for every executor.

``tgc cluster``, every ``tgc batch`` task and the AWS Lambda handler build a
:class:`RunSettings` and hand it to :func:`~tuned_grid_clustering.cli.job.cluster_units`,
so all of them cluster a partition in exactly the same way. Settings travel
as plain JSON (:meth:`RunSettings.to_json` / :meth:`RunSettings.from_json`),
which is also what the run manifest records.

Engine parameters use the engine's own names (``desired_cluster_weight``,
``desired_cluster_radius``...); anything the engine accepts is allowed, which
is checked against its signature, so new engine parameters work without a
change here.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..core.errors import ClusteringInputError

# Per-partition target fields, as in the Processing algorithms:
# field option name -> engine parameter it overrides.
OVERRIDE_FIELD_OPTIONS = {
    "target_weight_field": "desired_cluster_weight",
    "min_weight_field": "min_cluster_weight",
    "max_weight_field": "max_cluster_weight",
    "target_radius_field": "desired_cluster_radius",
}

REQUIRED_PARAMS = ("desired_cluster_weight", "desired_cluster_radius")

# Checks of the parameters we know; others are only checked by the engine.
_POSITIVE = {"desired_cluster_weight", "desired_cluster_radius", "max_cluster_radius"}
_POSITIVE_OR_NONE = {"max_cluster_weight", "min_cluster_weight", "neighbour_distance"}
_NON_NEGATIVE = {"weight_importance_factor"}
_INTEGER_AT_LEAST_ONE = {"max_passes", "initial_max_trials", "subsequent_max_trials"}

CLUSTER_SHAPES = ("auto", "hull", "union")


class SettingsError(ClusteringInputError):
    """A setting is invalid; ``field`` names it (e.g. ``params.max_passes``)."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field


def _engine_factory() -> Callable[..., Any]:
    from ..core.tuned import TunedClustering

    return TunedClustering


def _check_projected(setting: str) -> None:
    from pyproj import CRS

    try:
        crs = CRS.from_user_input(setting)
    except Exception as exc:  # pyproj's CRSError
        raise SettingsError(
            "crs", f'{setting!r} is not a CRS pyproj knows; use "auto" or e.g. "EPSG:3121"'
        ) from exc
    if not crs.is_projected:
        raise SettingsError(
            "crs",
            f'{setting!r} is not a projected CRS, and radii need metres; use "auto" '
            '(UTM of the centre) or a projected CRS such as "EPSG:3121"',
        )


def engine_parameter_names(factory: Callable[..., Any] | None = None) -> set[str] | None:
    """Keyword arguments the engine accepts; None if it takes ``**kwargs``."""
    if factory is None:
        factory = _engine_factory()
    target = factory.__init__ if inspect.isclass(factory) else factory
    parameters = inspect.signature(target).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return None
    return {name for name in parameters if name != "self"}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def validate_params(
    params: Mapping[str, Any],
    *,
    prefix: str = "params",
    require: bool = True,
    factory: Callable[..., Any] | None = None,
) -> dict[str, Any]:
    """Check engine parameters; raise :class:`SettingsError` naming the bad one.

    Parameters
    ----------
    params : mapping
        Engine keyword arguments.
    prefix : str
        How the mapping is named in messages (``params`` in a Lambda payload).
    require : bool
        Whether the target weight and radius must be present.
    factory : callable, optional
        The engine, for the list of accepted parameters (default ``TunedClustering``).
    """
    if not isinstance(params, Mapping):
        raise SettingsError(prefix, f"must be an object of parameters, got {type(params).__name__}")
    checked = dict(params)
    if require:
        for name in REQUIRED_PARAMS:
            if checked.get(name) is None:
                raise SettingsError(f"{prefix}.{name}", "is required (a number > 0)")
    accepted = engine_parameter_names(factory)
    for name, value in checked.items():
        where = f"{prefix}.{name}"
        if accepted is not None and name not in accepted:
            raise SettingsError(
                where, f"is not a parameter of the engine; accepted: {', '.join(sorted(accepted))}"
            )
        if name in _POSITIVE and value is not None and not (_is_number(value) and value > 0):
            raise SettingsError(where, f"must be a number > 0, got {value!r}")
        if (
            name in _POSITIVE_OR_NONE
            and value is not None
            and not (_is_number(value) and value > 0)
        ):
            raise SettingsError(where, f"must be a number > 0 or null, got {value!r}")
        if name in _NON_NEGATIVE and not (_is_number(value) and value >= 0):
            raise SettingsError(where, f"must be a number >= 0, got {value!r}")
        if name in _INTEGER_AT_LEAST_ONE and not (
            isinstance(value, int) and not isinstance(value, bool) and value >= 1
        ):
            raise SettingsError(where, f"must be an integer >= 1, got {value!r}")
        if (
            name == "random_state"
            and value is not None
            and not (isinstance(value, int) and not isinstance(value, bool) and value >= 0)
        ):
            raise SettingsError(where, f"must be an integer >= 0 or null, got {value!r}")
    return checked


@dataclass
class RunSettings:
    """Everything that decides the clusters of a partition, besides its data.

    Attributes
    ----------
    params : dict
        Engine keyword arguments, the fallback for every partition.
    weight_field : str or None
        Field with each unit's weight (population); None weighs units 1.
    partition_field : str or None
        Field whose value splits units into partitions.
    override_fields : dict
        Engine parameter -> field holding this partition's own value (one
        value per partition; NULL falls back to ``params``).
    crs : str
        Metric CRS used for clustering: ``"auto"`` (the layer's CRS if it is
        projected in metres, else the UTM zone of the partition's centre) or
        anything pyproj understands (``"EPSG:3121"``).
    cluster_shape : {"auto", "hull", "union"}
        Cluster polygons: convex hull of the members, or union of their
        geometries; ``auto`` = union for polygon units, hull for points.
    input_crs : str or None
        CRS to assume for input without one.
    """

    params: dict[str, Any]
    weight_field: str | None = None
    partition_field: str | None = None
    override_fields: dict[str, str] = field(default_factory=dict)
    crs: str = "auto"
    cluster_shape: str = "auto"
    input_crs: str | None = None

    def __post_init__(self) -> None:
        self.params = validate_params(self.params)
        for name, field_name in self.override_fields.items():
            if name not in OVERRIDE_FIELD_OPTIONS.values():
                raise SettingsError(
                    f"override_fields.{name}",
                    f"no per-partition field for this parameter; use one of "
                    f"{', '.join(OVERRIDE_FIELD_OPTIONS.values())}",
                )
            if not isinstance(field_name, str) or not field_name:
                raise SettingsError(f"override_fields.{name}", "must be a field name")
        if self.cluster_shape not in CLUSTER_SHAPES:
            raise SettingsError(
                "cluster_shape",
                f"must be one of {', '.join(CLUSTER_SHAPES)}, got {self.cluster_shape!r}",
            )
        for name in ("weight_field", "partition_field", "input_crs"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                raise SettingsError(name, f"must be a non-empty text or null, got {value!r}")
        if not isinstance(self.crs, str) or not self.crs:
            raise SettingsError(
                "crs", f'must be "auto" or a CRS such as "EPSG:3121", got {self.crs!r}'
            )
        if self.crs != "auto":
            _check_projected(self.crs)
        if not self.override_fields:
            # Combinations (max_passes without max_cluster_weight...) are the
            # engine's to judge: build it once now rather than fail every partition.
            try:
                _engine_factory()(**self.params)
            except ClusteringInputError as exc:
                raise SettingsError("params", str(exc)) from exc

    @property
    def seed(self) -> int | None:
        return self.params.get("random_state", 42)

    @property
    def fields(self) -> list[str]:
        """Attribute fields the run reads (besides the geometry)."""
        names = [self.weight_field, self.partition_field, *self.override_fields.values()]
        return [name for name in dict.fromkeys(names) if name]

    def to_json(self) -> dict[str, Any]:
        return {
            "params": dict(self.params),
            "weight_field": self.weight_field,
            "partition_field": self.partition_field,
            "override_fields": dict(self.override_fields),
            "crs": self.crs,
            "cluster_shape": self.cluster_shape,
            "input_crs": self.input_crs,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RunSettings:
        """Settings from a JSON object (a Lambda payload, a manifest)."""
        if not isinstance(data, Mapping):
            raise SettingsError("settings", f"must be an object, got {type(data).__name__}")
        unknown = sorted(set(data) - set(SETTING_NAMES))
        if unknown:
            raise SettingsError(
                unknown[0], f"is not a setting; known: {', '.join(sorted(SETTING_NAMES))}"
            )
        if "params" not in data:
            raise SettingsError(
                "params",
                "is required (an object with desired_cluster_weight and desired_cluster_radius)",
            )
        override_fields = data.get("override_fields") or {}
        if not isinstance(override_fields, Mapping):
            raise SettingsError("override_fields", "must be an object {parameter: field}")
        return cls(
            params=data["params"],
            weight_field=data.get("weight_field"),
            partition_field=data.get("partition_field"),
            override_fields=dict(override_fields),
            crs=data.get("crs") or "auto",
            cluster_shape=data.get("cluster_shape") or "auto",
            input_crs=data.get("input_crs"),
        )


# The keys of :meth:`RunSettings.from_json` (also fields of a Lambda cluster event).
SETTING_NAMES = (
    "params",
    "weight_field",
    "partition_field",
    "override_fields",
    "crs",
    "cluster_shape",
    "input_crs",
)


def parse_value(text: str) -> Any:
    """A ``--param NAME=VALUE`` value: JSON if it parses (numbers, true, null), else text."""
    import json

    try:
        return json.loads(text)
    except ValueError:
        return text
