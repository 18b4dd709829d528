"""``tgc batch`` on a real Dask cluster: a scheduler and worker processes on 127.0.0.1."""

from __future__ import annotations

import subprocess
import sys
import time

import pandas as pd
import pytest

gpd = pytest.importorskip("geopandas")
pytest.importorskip("pyarrow")
pytest.importorskip("pyogrio")
pytest.importorskip("distributed")
pytest.importorskip("tqdm")


def _single_machine_units(tmp_path, source, tgc_main) -> pd.DataFrame:
    out = tmp_path / "single.parquet"
    assert tgc_main("cluster", source, out, "--partition-field", "admin") == 0
    return gpd.read_parquet(out).set_index("cell_id").sort_index()


def _batch_units(output_dir) -> pd.DataFrame:
    files = sorted(
        p
        for p in (output_dir / "partitions").glob("*.parquet")
        if not p.name.endswith(".clusters.parquet")
    )
    return pd.concat([gpd.read_parquet(p) for p in files]).set_index("cell_id").sort_index()


def test_batch_on_a_cluster_matches_one_machine_then_resumes(
    tmp_path, grid_parquet, tgc_args, tgc_main, tgc, start_dask, manifest_of
):
    output_dir = tmp_path / "batch"
    with start_dask(tmp_path, n_workers=2) as cluster:
        # Not quiet: the progress bar is checked.
        arguments = tgc_args(
            "batch",
            grid_parquet,
            output_dir,
            "--partition-field",
            "admin",
            "--scheduler",
            cluster.address,
            quiet=False,
        )
        run = tgc(*arguments)
        assert run.returncode == 0, run.stderr
        # The progress bar: partitions done / total.
        n_partitions = pd.read_parquet(grid_parquet, columns=["admin"])["admin"].nunique()
        assert f"{n_partitions}/{n_partitions}" in run.stderr

        manifest = manifest_of(output_dir / "manifest.json")
        assert manifest["scheduler"] == cluster.address
        assert manifest["summary"]["n_ok"] == n_partitions
        workers = {entry["worker"] for entry in manifest["partitions"].values()}
        assert workers <= {"w1", "w2"}

        # A second run finds everything done and submits nothing.
        again = tgc(*arguments)
        assert again.returncode == 0, again.stderr
        assert f"{n_partitions} of {n_partitions} partitions already done" in again.stderr
        resumed = manifest_of(output_dir / "manifest.json")
        assert resumed["runs"][-1]["submitted"] == 0
        assert resumed["partitions"] == manifest["partitions"]

    batch = _batch_units(output_dir)
    single = _single_machine_units(tmp_path, grid_parquet, tgc_main)
    assert batch.index.equals(single.index)
    pd.testing.assert_series_equal(batch["cluster_id"], single["cluster_id"])
    pd.testing.assert_series_equal(batch["cluster_radius_m"], single["cluster_radius_m"])
    pd.testing.assert_series_equal(batch["cluster_weight"], single["cluster_weight"])


def test_killing_a_worker_mid_run_still_completes(
    tmp_path, grid_parquet, tgc_args, tgc_main, child_env, start_dask, manifest_of
):
    output_dir = tmp_path / "batch"
    command = [
        sys.executable,
        "-m",
        "tuned_grid_clustering.cli.main",
        *tgc_args("batch", grid_parquet, output_dir, "--partition-field", "admin"),
    ]
    with start_dask(tmp_path, n_workers=2) as cluster:
        process = subprocess.Popen(
            [*command, "--scheduler", cluster.address],
            env=child_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            victim = []
            with cluster.client() as client:

                def a_worker_is_busy() -> bool:
                    names = {a: w["name"] for a, w in client.scheduler_info()["workers"].items()}
                    for address, keys in client.processing().items():
                        if any(str(key).startswith("tgc-") for key in keys):
                            victim.append(names[address])
                            return True
                    return False

                _wait_until(a_worker_is_busy, 60, "a partition task to start")
            cluster.kill_worker(victim[0])
            _, err = process.communicate(timeout=120)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    assert process.returncode == 0, err
    manifest = manifest_of(output_dir / "manifest.json")
    assert manifest["summary"]["n_failed"] == 0
    survivor = ({"w1", "w2"} - set(victim)).pop()
    assert survivor in {entry["worker"] for entry in manifest["partitions"].values()}
    # Same clusters as without the failure.
    batch = _batch_units(output_dir)
    single = _single_machine_units(tmp_path, grid_parquet, tgc_main)
    pd.testing.assert_series_equal(batch["cluster_id"], single["cluster_id"])


def test_a_bad_partition_fails_alone_by_name(
    tmp_path, units_frame, tgc_args, tgc_main, tgc, start_dask, manifest_of
):
    frame = units_frame.copy()
    frame.loc[frame["admin"] == 4, "population"] = float("nan")
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    # One file per partition this time (named by partition).
    for admin, part in frame.groupby("admin"):
        part.to_parquet(inputs / f"area-{admin}.parquet")
    output_dir = tmp_path / "batch"
    with start_dask(tmp_path, n_workers=2) as cluster:
        run = tgc(*tgc_args("batch", inputs, output_dir, "--scheduler", cluster.address))
        assert run.returncode == 1  # 1 of 9 failed: more than 10 %
        assert "partition area-4 failed" in run.stderr
        assert "missing (NaN)" in run.stderr
        manifest = manifest_of(output_dir / "manifest.json")
        assert manifest["summary"]["failed"].keys() == {"area-4"}
        assert not (output_dir / "partitions" / "area-4.parquet").exists()
        assert all(
            entry["status"] == "ok"
            for name, entry in manifest["partitions"].items()
            if name != "area-4"
        )

        # Tolerating 20 %: the run passes; only the failed partition runs again.
        tolerant = ("--scheduler", cluster.address, "--max-failed-share", "0.2")
        again = tgc(*tgc_args("batch", inputs, output_dir, *tolerant))
        assert again.returncode == 0, again.stderr
        assert manifest_of(output_dir / "manifest.json")["runs"][-1]["submitted"] == 1

    # tgc cluster on the same folder: the same partitions, the same clusters.
    single = tmp_path / "single.parquet"
    assert tgc_main("cluster", inputs, single, "--max-failed-share", "0.2") == 0
    single_units = gpd.read_parquet(single).set_index("cell_id").sort_index()
    assert single_units.index.equals(frame.set_index("cell_id").sort_index().index)
    ok = single_units[single_units["admin"] != 4]
    assert single_units.loc[single_units["admin"] == 4, "cluster_id"].isna().all()
    pd.testing.assert_series_equal(ok["cluster_id"], _batch_units(output_dir)["cluster_id"])


def test_default_local_cluster(tmp_path, units_frame, tgc_main, manifest_of):
    small = units_frame[units_frame["admin"].isin([1, 2])]
    source = tmp_path / "small.parquet"
    small.to_parquet(source)
    output_dir = tmp_path / "local"
    options = ("--partition-field", "admin", "--workers", "1", "--format", "gpkg")
    assert tgc_main("batch", source, output_dir, *options) == 0
    manifest = manifest_of(output_dir / "manifest.json")
    assert manifest["scheduler"] == "local"
    assert sorted(manifest["partitions"]) == ["1", "2"]
    assert (output_dir / "partitions" / "1.gpkg").exists()


def _wait_until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
