"""``tgc cluster``: one machine, same layers as the Processing algorithms, a manifest."""

from __future__ import annotations

import configparser
import hashlib

import numpy as np
import pytest

gpd = pytest.importorskip("geopandas")
pytest.importorskip("pyarrow")
pytest.importorskip("pyogrio")

from tuned_grid_clustering.cli.main import main  # noqa: E402


def _metadata_version() -> str:
    from pathlib import Path

    parser = configparser.ConfigParser(interpolation=None)
    parser.read(Path(__file__).resolve().parents[2] / "metadata.txt", encoding="utf-8")
    return parser["general"]["version"]


def test_partitioned_run_writes_both_layers_and_a_manifest(
    tmp_path, grid_parquet, units_frame, tgc_main, manifest_of
):
    out = tmp_path / "out" / "clusters.gpkg"
    code = tgc_main("cluster", grid_parquet, out, "--partition-field", "admin", "--n-jobs", "2")
    assert code == 0

    units = gpd.read_file(out, layer="units")
    clusters = gpd.read_file(out, layer="clusters")
    # Every unit once, in the input order, with its cluster.
    assert units["cell_id"].tolist() == units_frame["cell_id"].tolist()
    for column in (
        "cluster_id",
        "cluster_weight",
        "cluster_radius_m",
        "cluster_pass",
        "cluster_status",
    ):
        assert units[column].notna().all()
    assert all(
        cid.startswith(f"{admin}/CLUSTER_")
        for cid, admin in zip(units["cluster_id"], units["admin"])
    )
    # No cluster crosses a partition; the clusters layer agrees with the units.
    assert (units.groupby("cluster_id")["admin"].nunique() == 1).all()
    assert set(clusters["cluster_id"]) == set(units["cluster_id"])
    assert clusters["n_units"].sum() == len(units)
    by_id = clusters.set_index("cluster_id")
    weights = units.groupby("cluster_id")["population"].sum()
    np.testing.assert_allclose(by_id.loc[weights.index, "weight"], weights, rtol=1e-9)
    np.testing.assert_allclose(
        units["cluster_radius_m"], by_id.loc[units["cluster_id"], "radius_m"].to_numpy()
    )
    assert set(clusters.geom_type) == {"Polygon"}
    assert clusters.crs.to_epsg() == 4326
    # Every member lies in (or on) its cluster's hull.
    joined = units.join(by_id.geometry.rename("hull"), on="cluster_id")
    hulls = gpd.GeoSeries(joined["hull"], crs=4326).to_crs(32651).buffer(0.01)
    assert hulls.contains(joined.geometry.to_crs(32651)).all()

    manifest = manifest_of(out.with_name("clusters.manifest.json"))
    assert manifest["package_version"] == _metadata_version()
    assert manifest["seed"] == 7 and manifest["settings"]["params"]["random_state"] == 7
    assert manifest["inputs"][0]["sha256"] == hashlib.sha256(grid_parquet.read_bytes()).hexdigest()
    assert manifest["outputs"][0]["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    admins = sorted(units_frame["admin"].unique())
    assert sorted(manifest["partitions"]) == sorted(str(a) for a in admins)
    for name, entry in manifest["partitions"].items():
        assert entry["status"] == "ok" and entry["seconds"] >= 0
        assert entry["metric_crs"] == "EPSG:32651"  # UTM 51N, the data's zone
        assert entry["n_units"] == int((units_frame["admin"] == int(name)).sum())
    assert manifest["summary"]["n_failed"] == 0


def test_per_partition_target_fields(tmp_path, units_frame, tgc_main, manifest_of):
    frame = units_frame.copy()
    frame["target_radius"] = np.where(frame["admin"] % 2 == 1, 1000.0, 2000.0)
    frame.loc[frame["admin"] == 2, "target_radius"] = np.nan  # NULL: falls back to --radius
    source = tmp_path / "grid.gpkg"
    frame.to_file(source, layer="grid", engine="pyogrio")
    out = tmp_path / "clusters.parquet"
    per_partition_radius = ("--partition-field", "admin", "--target-radius-field", "target_radius")
    code = tgc_main("cluster", source, out, "--layer", "grid", *per_partition_radius)
    assert code == 0
    assert out.exists() and out.with_name("clusters.clusters.parquet").exists()
    entries = manifest_of(out.with_name("clusters.manifest.json"))["partitions"]
    for name, entry in entries.items():
        expected = 800.0 if name == "2" else (1000.0 if int(name) % 2 == 1 else 2000.0)
        assert entry["params"]["desired_cluster_radius"] == expected

    # A target field that varies inside a partition fails that partition alone.
    frame.loc[frame.index[frame["admin"] == 3][:5], "target_radius"] = 1234.0
    varying = tmp_path / "varying.parquet"
    frame.to_parquet(varying)
    out = tmp_path / "varying.gpkg"
    code = tgc_main("cluster", varying, out, *per_partition_radius, "--max-failed-share", "0.5")
    assert code == 0
    entries = manifest_of(out.with_name("varying.manifest.json"))["partitions"]
    assert entries["3"]["status"] == "failed"
    assert "target_radius" in entries["3"]["error"]
    assert all(entry["status"] == "ok" for name, entry in entries.items() if name != "3")


def test_a_bad_partition_fails_alone(tmp_path, units_frame, tgc_main, manifest_of, capsys):
    frame = units_frame.copy()
    frame.loc[frame["admin"] == 4, "population"] = -1.0
    source = tmp_path / "bad.parquet"
    frame.to_parquet(source)
    out = tmp_path / "bad.gpkg"
    n_partitions = frame["admin"].nunique()
    assert 1 / n_partitions > 0.1

    code = tgc_main("cluster", source, out, "--partition-field", "admin")
    assert code == 1  # 1 of n failed is more than the default 10 %
    err = capsys.readouterr().err
    assert "partition 4 failed" in err and "negative" in err

    units = gpd.read_file(out, layer="units")
    assert len(units) == len(frame)  # no unit lost
    failed = units["admin"] == 4
    assert units.loc[failed, "cluster_id"].isna().all()
    assert units.loc[~failed, "cluster_id"].notna().all()
    # The failed partition's units have every cluster column, empty.
    assert units.loc[failed, "cluster_status"].isna().all()
    assert (units.loc[~failed, "cluster_status"] == "ok").any()
    manifest = manifest_of(out.with_name("bad.manifest.json"))
    assert manifest["summary"]["failed"].keys() == {"4"}

    options = ("--partition-field", "admin", "--max-failed-share", "0.5")
    code = tgc_main("cluster", source, out, *options)
    assert code == 0


def test_guaranteed_psu_options_reach_the_engine(tmp_path, grid_parquet, tgc_main, manifest_of):
    out = tmp_path / "guaranteed.parquet"
    options = ("--min-weight", "45", "--max-weight", "90", "--max-radius", "1500")
    code = tgc_main(
        "cluster",
        grid_parquet,
        out,
        "--partition-field",
        "admin",
        *options,
        "--bridge-distance",
        "1000",
        "--no-contiguity",
    )
    assert code == 0
    params = manifest_of(out.with_name("guaranteed.manifest.json"))["settings"]["params"]
    assert params["min_cluster_weight"] == 45 and params["max_cluster_radius"] == 1500
    assert params["bridge_distance"] == 1000 and params["contiguity"] is False

    out = tmp_path / "contiguous.parquet"
    assert tgc_main("cluster", grid_parquet, out, "--partition-field", "admin", *options) == 0
    params = manifest_of(out.with_name("contiguous.manifest.json"))["settings"]["params"]
    assert "contiguity" not in params  # the engine's default (on) applies
    clusters = gpd.read_parquet(out.with_name("contiguous.clusters.parquet"))
    # Out of range only where the data leave no choice: isolated hamlets.
    in_range = clusters["weight"].between(45, 90)
    assert in_range.mean() >= 0.85
    assert set(clusters.loc[~in_range, "status"]) <= {"island_under_min"}


def test_polygon_cells_to_geoparquet(tmp_path, units_frame, tgc_main):
    cells = units_frame.iloc[:600].copy()
    from shapely.geometry import box

    half = 1 / 2400  # 3" square cells around the points
    cells["geometry"] = [
        box(p.x - half, p.y - half, p.x + half, p.y + half) for p in cells.geometry
    ]
    source = tmp_path / "cells.gpkg"
    cells.to_file(source, engine="pyogrio")
    out = tmp_path / "cells_out.parquet"
    assert tgc_main("cluster", source, out) == 0
    units = gpd.read_parquet(out)
    clusters = gpd.read_parquet(out.with_name("cells_out.clusters.parquet"))
    assert len(units) == len(cells)
    assert units["cluster_id"].str.fullmatch(r"CLUSTER_\d{3}(_\d{2})*").all()  # no partition
    # Union of cells: the clusters cover the cells' area exactly.
    assert clusters.to_crs(32651).area.sum() == pytest.approx(
        cells.to_crs(32651).area.sum(), rel=1e-6
    )


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--target-weight", "-5"], "desired_cluster_weight"),
        (["--param", "no_such_parameter=1"], "params.no_such_parameter"),
        (["--weight-field", "nope"], "'nope'"),
        (["--max-passes", "3"], "max_cluster_weight"),
        (["--crs", "EPSG:4326"], "not a projected CRS"),
    ],
)
def test_bad_parameters_exit_2_with_the_fix(
    tmp_path, grid_parquet, tgc_main, capsys, extra, message
):
    code = tgc_main("cluster", grid_parquet, tmp_path / "x.gpkg", *extra)
    err = capsys.readouterr().err
    assert code == 2 and message in err


def test_null_partition_values_are_refused(tmp_path, units_frame, tgc_main, capsys):
    frame = units_frame.copy()
    frame["admin"] = frame["admin"].astype("float64")
    frame.loc[frame.index[:7], "admin"] = np.nan
    source = tmp_path / "nulls.parquet"
    frame.to_parquet(source)
    code = tgc_main("cluster", source, tmp_path / "x.gpkg", "--partition-field", "admin")
    assert code == 2
    assert "7 of" in capsys.readouterr().err


def test_synthetic_country(tmp_path, tgc_main):
    source = tmp_path / "country.parquet"
    assert main(["synthetic", "-o", str(source), "--cells", "3000", "--admin-cells", "1000"]) == 0
    country = gpd.read_parquet(source)
    assert len(country) == 3000
    assert {"cell_id", "population", "admin", "urban"} <= set(country.columns)
    assert country["admin"].str.startswith("SYN-").all() and country["admin"].nunique() > 1
    out = tmp_path / "country.gpkg"
    code = tgc_main("cluster", source, out, "--partition-field", "admin")
    assert code == 0
