"""Choosing and applying a metric CRS."""

from __future__ import annotations

import math

import numpy as np
import pytest
from pyproj import CRS

from tuned_grid_clustering.core import ClusteringInputError
from tuned_grid_clustering.core.projection import (
    metric_crs_for,
    project_to_metric,
    utm_epsg_for_lonlat,
)


@pytest.mark.parametrize(
    ("lon", "lat", "epsg"),
    [
        (125.38, 8.0, 32651),  # the Philippine benchmark data
        (-58.4, -34.6, 32721),  # Buenos Aires, southern hemisphere
        (0.0, 0.0, 32631),
        (-180.0, 10.0, 32601),
        (180.0, 10.0, 32660),
        (5.3, 60.4, 32632),  # Bergen: the Norway exception (would be 31)
        (15.6, 78.2, 32633),  # Svalbard exception
        (3.0, 75.0, 32631),
        (40.0, 80.0, 32637),
        (10.0, 85.0, 3413),  # beyond UTM: polar stereographic north
        (10.0, -85.0, 3031),  # and south
    ],
)
def test_utm_epsg_for_lonlat(lon, lat, epsg):
    assert utm_epsg_for_lonlat(lon, lat) == epsg


@pytest.mark.parametrize(("lon", "lat"), [(200.0, 0.0), (0.0, 95.0), (math.nan, 1.0)])
def test_utm_epsg_rejects_invalid_lonlat(lon, lat):
    with pytest.raises(ClusteringInputError, match="longitude/latitude"):
        utm_epsg_for_lonlat(lon, lat)


def test_metric_crs_for_geographic_uses_utm_of_the_centre():
    xy = np.array([[125.3, 7.9], [125.5, 8.1]])
    assert metric_crs_for(xy, 4326).to_epsg() == 32651
    assert metric_crs_for(xy, "EPSG:4326").to_epsg() == 32651


def test_metric_crs_for_keeps_a_metric_projected_crs():
    xy = np.array([[1_430_000.0, 870_000.0]])
    assert metric_crs_for(xy, 3121) == CRS.from_epsg(3121)
    assert metric_crs_for(xy, "EPSG:32651") == CRS.from_epsg(32651)


def test_metric_crs_for_replaces_web_mercator_and_feet():
    # Web Mercator is in metres but its scale grows with latitude.
    mercator_xy = np.array([[1_113_195.0, 6_800_125.0]])  # about 10 E, 52 N
    assert metric_crs_for(mercator_xy, 3857).to_epsg() == 32632
    # NAD83 / New York Long Island (ftUS): projected, but in feet.
    feet_xy = np.array([[988_000.0, 200_000.0]])
    assert metric_crs_for(feet_xy, 2263).to_epsg() == 32618


def test_metric_crs_for_data_across_the_antimeridian():
    xy = np.array([[179.5, -17.0], [-179.5, -16.0]])  # Fiji
    assert metric_crs_for(xy, 4326).to_epsg() in (32701, 32760)


def test_metric_crs_for_rejects_unknown_crs_and_no_points():
    with pytest.raises(ClusteringInputError, match="coordinate reference system"):
        metric_crs_for(np.zeros((1, 2)), "not a crs")
    with pytest.raises(ClusteringInputError, match="no valid coordinates"):
        metric_crs_for(np.full((2, 2), np.nan), 4326)


def test_project_to_metric_distances_are_metres():
    lon = np.array([125.38, 125.38, 125.39])
    lat = np.array([8.00, 8.01, 8.00])
    xy, crs = project_to_metric(lon, lat, "EPSG:4326")
    assert crs.to_epsg() == 32651
    north = math.dist(xy[0], xy[1])
    east = math.dist(xy[0], xy[2])
    assert north == pytest.approx(1106, rel=0.01)  # 0.01 deg of latitude
    assert east == pytest.approx(1102, rel=0.01)  # 0.01 deg of longitude at 8 N


def test_project_to_metric_explicit_target_and_identity():
    lon, lat = np.array([125.38]), np.array([8.0])
    xy, crs = project_to_metric(lon, lat, 4326, 3121)
    assert crs == CRS.from_epsg(3121)
    assert 1_000_000 < xy[0, 0] < 2_000_000
    same, crs_same = project_to_metric(xy[:, 0], xy[:, 1], 3121)
    assert crs_same == CRS.from_epsg(3121)
    assert np.array_equal(same, xy)


def test_project_to_metric_rejects_mismatched_lengths():
    with pytest.raises(ClusteringInputError, match="one x and one y"):
        project_to_metric([1.0, 2.0], [1.0], 4326)
