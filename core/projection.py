"""Choosing and applying a metric CRS, so clustering never runs in degrees.

K-means distances and cluster radii only make sense in metres. The helpers
here pick a suitable projected CRS and transform coordinates into it:

* geographic input (longitude/latitude): the UTM zone of the data's centre
  (WGS 84 / UTM, EPSG 326xx north, 327xx south, with the Norway and Svalbard
  exceptions); beyond UTM's limits (north of 84°N, south of 80°S) the polar
  stereographic CRS of that pole is used instead: EPSG:3413 (north) or
  EPSG:3031 (south);
* projected input in metres: kept as it is, except Mercator-based CRSs such as
  EPSG:3857 (Web Mercator), whose scale grows with latitude (distances are
  doubled at 60°); those, and projected CRSs in other units (feet), get the
  UTM zone of the data's centre.

Coordinates are always ``x, y`` in the GIS order: ``x`` is the longitude or
easting, ``y`` the latitude or northing (as QGIS gives them), whatever the
CRS's formal axis order.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .errors import ClusteringInputError

#: EPSG codes used beyond the UTM latitude limits.
NORTH_POLAR_EPSG = 3413  # WGS 84 / NSIDC Sea Ice Polar Stereographic North
SOUTH_POLAR_EPSG = 3031  # WGS 84 / Antarctic Polar Stereographic

_METRE_NAMES = {"metre", "meter", "m", "metres", "meters"}


def utm_epsg_for_lonlat(lon: float, lat: float) -> int:
    """EPSG code of the WGS 84 UTM zone containing a point (polar CRS beyond UTM).

    Parameters
    ----------
    lon, lat : float
        Longitude in [-180, 180] and latitude in [-90, 90], degrees.

    Returns
    -------
    int
        ``32600 + zone`` north of the equator, ``32700 + zone`` south of it;
        3413 north of 84°N and 3031 south of 80°S (outside UTM's range).

    Raises
    ------
    ClusteringInputError
        If lon or lat is not finite or out of range.
    """
    if not (math.isfinite(lon) and math.isfinite(lat)) or abs(lat) > 90 or abs(lon) > 180:
        raise ClusteringInputError(
            f"({lon}, {lat}) is not a valid longitude/latitude. Check that the layer's CRS "
            "is really geographic and that x is the longitude and y the latitude."
        )
    if lat > 84.0:
        return NORTH_POLAR_EPSG
    if lat < -80.0:
        return SOUTH_POLAR_EPSG
    zone = min(int(math.floor((lon + 180.0) / 6.0)) + 1, 60)
    # The two official exceptions to the 6° grid.
    if 56.0 <= lat < 64.0 and 3.0 <= lon < 12.0:
        zone = 32  # south-west Norway
    elif 72.0 <= lat <= 84.0 and 0.0 <= lon < 42.0:
        if lon < 9.0:
            zone = 31
        elif lon < 21.0:
            zone = 33
        elif lon < 33.0:
            zone = 35
        else:
            zone = 37  # Svalbard
    return (32600 if lat >= 0 else 32700) + zone


def _as_crs(crs: Any):
    from pyproj import CRS
    from pyproj.exceptions import CRSError

    try:
        return CRS.from_user_input(crs)
    except CRSError as error:
        raise ClusteringInputError(
            f"{crs!r} is not a coordinate reference system pyproj understands ({error}). "
            "Give an EPSG code (e.g. 4326), 'EPSG:4326' or a WKT string."
        ) from error


def _is_distance_preserving_metric(crs) -> bool:
    """Projected, in metres, and not a Mercator variant (whose scale varies with latitude)."""
    if not crs.is_projected:
        return False
    units = {(axis.unit_name or "").lower() for axis in crs.axis_info[:2]}
    if not units or not units <= _METRE_NAMES:
        return False
    operation = crs.coordinate_operation
    method = (operation.method_name if operation is not None else "").lower()
    return not ("mercator" in method and "transverse" not in method)


def _centre_lonlat(lon: np.ndarray, lat: np.ndarray) -> tuple[float, float]:
    """Centre of the bounding box; handles data spanning the antimeridian."""
    west, east = float(lon.min()), float(lon.max())
    if east - west > 180.0:
        # Shorter the other way round: measure longitudes in [0, 360).
        shifted = np.mod(lon, 360.0)
        centre = (float(shifted.min()) + float(shifted.max())) / 2.0
        centre_lon = centre - 360.0 if centre > 180.0 else centre
    else:
        centre_lon = (west + east) / 2.0
    return centre_lon, (float(lat.min()) + float(lat.max())) / 2.0


def metric_crs_for(xy: Any, crs: Any):
    """A metric CRS suitable for clustering coordinates given in ``crs``.

    Parameters
    ----------
    xy : array-like of shape (n, 2)
        Coordinates in ``crs`` (x = longitude/easting first).
    crs : anything ``pyproj.CRS.from_user_input`` accepts
        The coordinates' CRS (EPSG code, "EPSG:xxxx", WKT, pyproj.CRS).

    Returns
    -------
    pyproj.CRS
        ``crs`` itself when it is projected in metres (and not Mercator), else
        the UTM (or polar) CRS of the data's centre, see the module docstring.

    Raises
    ------
    ClusteringInputError
        Unknown CRS, no finite coordinates, or a CRS that is neither
        geographic nor projected.
    """
    from pyproj import CRS, Transformer

    source = _as_crs(crs)
    if _is_distance_preserving_metric(source):
        return source
    points = np.asarray(xy, dtype=float).reshape(-1, 2)
    points = points[np.isfinite(points).all(axis=1)]
    if points.shape[0] == 0:
        raise ClusteringInputError(
            "There are no valid coordinates to choose a projection from. Check that the "
            "input has geometries."
        )
    if source.is_geographic:
        lon, lat = points[:, 0], points[:, 1]
    elif source.is_projected:
        to_lonlat = Transformer.from_crs(source, CRS.from_epsg(4326), always_xy=True)
        lon, lat = to_lonlat.transform(points[:, 0], points[:, 1])
        lon, lat = np.asarray(lon), np.asarray(lat)
        ok = np.isfinite(lon) & np.isfinite(lat)
        lon, lat = lon[ok], lat[ok]
        if lon.size == 0:
            raise ClusteringInputError(
                f"The coordinates are outside the area where {source.name} is defined. "
                "Check the layer's CRS."
            )
    else:
        raise ClusteringInputError(
            f"{source.name} is neither geographic nor projected, so no metric projection "
            "can be chosen for it. Reproject the layer to a projected CRS in metres."
        )
    return CRS.from_epsg(utm_epsg_for_lonlat(*_centre_lonlat(lon, lat)))


def project_to_metric(x: Any, y: Any, src_crs: Any, dst_crs: Any = None) -> tuple[np.ndarray, Any]:
    """Transform coordinates to a metric CRS.

    Parameters
    ----------
    x, y : array-like of shape (n,)
        Coordinates in ``src_crs`` (x = longitude/easting).
    src_crs : CRS-like
        Their CRS.
    dst_crs : CRS-like, optional
        Target CRS; default :func:`metric_crs_for` of the data.

    Returns
    -------
    xy_m : ndarray of shape (n, 2)
        Coordinates in metres.
    dst_crs : pyproj.CRS
        The CRS used.

    Raises
    ------
    ClusteringInputError
        If a coordinate cannot be transformed (outside the target CRS's area).
    """
    from pyproj import Transformer

    x = np.asarray(x, dtype=float).reshape(-1)
    y = np.asarray(y, dtype=float).reshape(-1)
    if x.shape != y.shape:
        raise ClusteringInputError(
            f"x has {x.size} values but y has {y.size}. Pass one x and one y per unit."
        )
    source = _as_crs(src_crs)
    target = (
        metric_crs_for(np.column_stack([x, y]), source) if dst_crs is None else _as_crs(dst_crs)
    )
    if source == target:
        return np.column_stack([x, y]), target
    transformer = Transformer.from_crs(source, target, always_xy=True)
    tx, ty = transformer.transform(x, y)
    xy_m = np.column_stack([np.asarray(tx, dtype=float), np.asarray(ty, dtype=float)])
    bad = ~np.isfinite(xy_m).all(axis=1) & np.isfinite(np.column_stack([x, y])).all(axis=1)
    if bad.any():
        raise ClusteringInputError(
            f"{int(bad.sum())} coordinate(s) could not be transformed to {target.name} (first "
            f"at row {int(np.flatnonzero(bad)[0])}). Check the layer's CRS, or choose a "
            "projected CRS that covers the data."
        )
    return xy_m, target
