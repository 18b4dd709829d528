"""Reading and writing layers for the command line: GeoParquet and OGR formats.

GeoParquet goes through geopandas + pyarrow, everything else (GeoPackage,
FlatGeobuf, GeoJSON, shapefiles) through geopandas + pyogrio. A partition can
be read on its own (a pyarrow filter or an OGR ``where`` clause), so a Dask
task or a Lambda reads only its own rows; rows keep the file's order either
way, which keeps the clusters identical to a run over the whole file.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import Any

from ..core.errors import ClusteringInputError

PARQUET_SUFFIXES = (".parquet", ".geoparquet", ".pq")
INPUT_SUFFIXES = (*PARQUET_SUFFIXES, ".gpkg", ".fgb", ".geojson", ".json", ".shp")

# Layer names inside a GeoPackage output, and the suffix of the clusters
# file next to a GeoParquet output (GeoParquet holds one table per file).
UNITS_LAYER = "units"
CLUSTERS_LAYER = "clusters"
CLUSTERS_SUFFIX = ".clusters"


def require_geo_packages() -> None:
    """Raise a clear error when the optional ``[cli]`` packages are missing."""
    missing = []
    for name in ("geopandas", "pyarrow", "pyogrio"):
        try:
            __import__(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise ClusteringInputError(
            f"The command line needs {', '.join(missing)}, which are not installed. "
            "Install them with: python -m pip install 'tuned_grid_clustering[cli]' "
            f"(or: python -m pip install {' '.join(missing)})."
        )


def is_parquet(path: str | os.PathLike[str]) -> bool:
    return Path(path).suffix.lower() in PARQUET_SUFFIXES


def sha256_file(path: str | os.PathLike[str], chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _check_exists(path: str | os.PathLike[str]) -> Path:
    path = Path(path)
    if not path.is_file():
        raise ClusteringInputError(f"Input file {str(path)!r} does not exist. Check the path.")
    return path


def field_names(path: str | os.PathLike[str], layer: str | None = None) -> list[str]:
    """Attribute field names of a layer (without the geometry column)."""
    path = _check_exists(path)
    if is_parquet(path):
        import pyarrow.parquet as pq

        schema = pq.read_schema(path)
        geometry_columns = _parquet_geometry_columns(schema)
        return [name for name in schema.names if name not in geometry_columns]
    import pyogrio

    info = pyogrio.read_info(path, layer=layer)
    return list(info["fields"])


def _parquet_geometry_columns(schema: Any) -> set[str]:
    import json

    meta = (schema.metadata or {}).get(b"geo")
    if not meta:
        return set()
    return set(json.loads(meta).get("columns", {}))


def check_fields(
    path: str | os.PathLike[str], names: Sequence[str], layer: str | None = None
) -> None:
    """Raise :class:`ClusteringInputError` naming fields the layer lacks."""
    available = field_names(path, layer)
    missing = [name for name in names if name not in available]
    if missing:
        raise ClusteringInputError(
            f"{path}: no field {', '.join(repr(m) for m in missing)}; the layer has "
            f"{', '.join(available) or 'no attribute fields'}. Check the field names."
        )


def partition_counts(
    path: str | os.PathLike[str], partition_field: str, layer: str | None = None
) -> dict[Hashable, int]:
    """Units per distinct value of the partition field, sorted by value.

    Only the partition column is read. NULL or empty values are an error.
    """
    path = _check_exists(path)
    check_fields(path, [partition_field], layer)
    if is_parquet(path):
        import pyarrow.parquet as pq

        values = pq.read_table(path, columns=[partition_field]).column(0).to_pandas()
    else:
        import pyogrio

        frame = pyogrio.read_dataframe(
            path, layer=layer, columns=[partition_field], read_geometry=False
        )
        values = frame[partition_field]
    missing = values.isna() | values.astype(str).str.strip().eq("")
    if missing.any():
        raise ClusteringInputError(
            f"{path}: {int(missing.sum())} of {len(values)} units have no value in the "
            f"partition field {partition_field!r} (NULL or empty). Fill it for these units "
            "or drop them before clustering."
        )
    counts = values.value_counts(sort=False)
    keys = [key.item() if hasattr(key, "item") else key for key in counts.index]
    sizes = dict(zip(keys, (int(c) for c in counts.to_numpy())))
    try:
        ordered = sorted(sizes)
    except TypeError:
        ordered = sorted(sizes, key=str)
    return {key: sizes[key] for key in ordered}


def _where_literal(value: Hashable) -> str:
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    return repr(value.item() if hasattr(value, "item") else value)


def read_units(
    path: str | os.PathLike[str],
    *,
    layer: str | None = None,
    partition_field: str | None = None,
    partition: Hashable | None = None,
) -> Any:
    """Read a layer as a GeoDataFrame, optionally only one partition's rows.

    Parameters
    ----------
    path : path
        GeoParquet (``.parquet``) or any OGR vector format.
    layer : str, optional
        Layer name for multi-layer formats (GeoPackage).
    partition_field, partition : optional
        Read only the rows whose ``partition_field`` equals ``partition``.
    """
    import geopandas as gpd

    path = _check_exists(path)
    filtered = partition_field is not None and partition is not None
    if is_parquet(path):
        kwargs: dict[str, Any] = {}
        if filtered:
            value = partition.item() if hasattr(partition, "item") else partition
            kwargs["filters"] = [(partition_field, "==", value)]
        frame = gpd.read_parquet(path, **kwargs)
    else:
        where = f'"{partition_field}" = {_where_literal(partition)}' if filtered else None
        frame = gpd.read_file(path, layer=layer, engine="pyogrio", where=where)
    if frame.geometry.name is None or len(frame.columns) == 0:
        raise ClusteringInputError(f"{path}: the layer has no geometry column.")
    return frame


def clusters_path(path: str | os.PathLike[str]) -> Path:
    """Where the clusters table of a GeoParquet output goes (next to the units)."""
    path = Path(path)
    return path.with_name(path.stem + CLUSTERS_SUFFIX + path.suffix)


def write_layers(units: Any, clusters: Any, path: str | os.PathLike[str]) -> list[Path]:
    """Write the units and clusters layers; return the files written.

    A GeoPackage gets two layers (``units``, ``clusters``); GeoParquet gets
    ``<path>`` for the units and ``<stem>.clusters.parquet`` next to it. Files
    are written under a temporary name and renamed, so a crash never leaves a
    half-written output that a resumed run would take for a finished one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    written = []
    if is_parquet(path):
        targets = [(units, path), (clusters, clusters_path(path))]
        for frame, target in targets:
            tmp = _temporary_sibling(target)
            try:
                frame.to_parquet(tmp, index=False)
                os.replace(tmp, target)
            finally:
                if tmp.exists():
                    tmp.unlink()
            written.append(target)
        return written
    tmp = _temporary_sibling(path)
    try:
        units.to_file(tmp, layer=UNITS_LAYER, engine="pyogrio")
        clusters.to_file(tmp, layer=CLUSTERS_LAYER, engine="pyogrio")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return [path]


def _temporary_sibling(path: Path) -> Path:
    handle, name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(handle)
    os.unlink(name)  # the writers want to create the file themselves
    return Path(name)


def read_layers(path: str | os.PathLike[str]) -> tuple[Any, Any]:
    """Read back what :func:`write_layers` wrote: (units, clusters)."""
    import geopandas as gpd

    path = Path(path)
    if is_parquet(path):
        return gpd.read_parquet(path), gpd.read_parquet(clusters_path(path))
    return (
        gpd.read_file(path, layer=UNITS_LAYER, engine="pyogrio"),
        gpd.read_file(path, layer=CLUSTERS_LAYER, engine="pyogrio"),
    )
