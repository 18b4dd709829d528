"""Shared data and processes for the command-line, Dask and Lambda tests.

These tests need the optional packages (geopandas, pyarrow, pyogrio, dask,
moto); each test module skips itself with ``pytest.importorskip`` when they
are missing (Debian's Python lacks them). Run them in a venv from PyPI::

    python -m venv /tmp/venv-cli
    /tmp/venv-cli/bin/pip install '.[cli,dask,aws,test]'
    /tmp/venv-cli/bin/python -m pytest test/cli
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
PLUGINS_DIR = REPO / ".build" / "plugins"

# Small, fast engine settings: a few hundred people per partition, 60 per cluster.
ENGINE_OPTIONS = [
    "--weight-field",
    "population",
    "--target-weight",
    "60",
    "--radius",
    "800",
    "--initial-trials",
    "12",
    "--seed",
    "7",
]


def subprocess_env() -> dict[str, str]:
    """Environment for child processes: they import this checkout, not an installed copy."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(PLUGINS_DIR), *([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])]
    )
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def synthetic_units(n_cells: int = 4000, seed: int = 5, admin_cells: int = 700):
    """A GeoDataFrame of populated grid points with an integer ``admin`` partition."""
    import geopandas as gpd

    from tuned_grid_clustering.core.synthetic import synthetic_population_grid

    grid = synthetic_population_grid(n_cells, seed=seed, admin_cells=admin_cells)
    return gpd.GeoDataFrame(
        {
            "cell_id": np.arange(len(grid), dtype=np.int64),
            "population": grid.population.astype(float),
            "admin": grid.admin.astype(np.int64),
            "urban": grid.urban.astype(bool),
        },
        geometry=gpd.points_from_xy(grid.lon, grid.lat),
        crs="EPSG:4326",
    )


@pytest.fixture(scope="session")
def units_frame():
    pytest.importorskip("geopandas")
    pytest.importorskip("pyarrow")
    return synthetic_units()


@pytest.fixture()
def grid_parquet(tmp_path, units_frame):
    path = tmp_path / "grid.parquet"
    units_frame.to_parquet(path)
    return path


def run_tgc(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``tgc`` as a separate process, as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "tuned_grid_clustering.cli.main", *args],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def command_line(command: str, source, output, *options: str, quiet: bool = True) -> list[str]:
    """Arguments of ``tgc <command> SOURCE -o OUTPUT [--quiet] ENGINE_OPTIONS OPTIONS``.

    ``options`` come after the engine options, so they may override them.
    """
    quiet_flag = ["--quiet"] if quiet else []
    return [command, str(source), "-o", str(output), *quiet_flag, *ENGINE_OPTIONS, *options]


def run_main(command: str, source, output, *options: str, quiet: bool = True) -> int:
    """``tgc`` in this process (:func:`command_line`); its exit code."""
    from tuned_grid_clustering.cli.main import main

    return main(command_line(command, source, output, *options, quiet=quiet))


def read_manifest(path: Path) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


# ---------------------------------------------------------------------------
# A real Dask cluster on loopback: one scheduler, worker processes
# ---------------------------------------------------------------------------


class DaskProcesses:
    """A ``dask scheduler`` and ``dask worker`` processes on 127.0.0.1."""

    def __init__(self, folder: Path, n_workers: int = 2):
        self.folder = folder
        self.scheduler_file = folder / "scheduler.json"
        self.processes: list[subprocess.Popen] = []
        self.workers: dict[str, subprocess.Popen] = {}
        self.n_workers = n_workers

    def _spawn(self, *args: str, log: str) -> subprocess.Popen:
        stream = open(self.folder / log, "w")  # noqa: SIM115 - closed with the process
        process = subprocess.Popen(
            [sys.executable, "-m", "dask", *args],
            env=subprocess_env(),
            stdout=stream,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        process._log = stream  # type: ignore[attr-defined]
        self.processes.append(process)
        return process

    def start(self) -> DaskProcesses:
        self._spawn(
            "scheduler",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--no-dashboard",
            "--scheduler-file",
            str(self.scheduler_file),
            log="scheduler.log",
        )
        deadline = time.monotonic() + 60
        while not self.scheduler_file.exists():
            if time.monotonic() > deadline:
                raise RuntimeError("the Dask scheduler did not start: " + self.log("scheduler.log"))
            time.sleep(0.1)
        for index in range(self.n_workers):
            name = f"w{index + 1}"
            self.workers[name] = self._spawn(
                "worker",
                "--scheduler-file",
                str(self.scheduler_file),
                "--name",
                name,
                "--nthreads",
                "1",
                "--no-nanny",
                "--no-dashboard",
                "--host",
                "127.0.0.1",
                "--memory-limit",
                "0",
                log=f"{name}.log",
            )
        with self.client() as client:
            client.wait_for_workers(self.n_workers, timeout=60)
        return self

    @property
    def address(self) -> str:
        return json.loads(self.scheduler_file.read_text())["address"]

    def client(self):
        from distributed import Client

        return Client(self.address, timeout="30s")

    def log(self, name: str) -> str:
        path = self.folder / name
        return path.read_text() if path.exists() else ""

    def kill_worker(self, name: str) -> None:
        process = self.workers[name]
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)

    def stop(self) -> None:
        for process in reversed(self.processes):
            if process.poll() is None:
                process.terminate()
        for process in reversed(self.processes):
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=15)
            process._log.close()  # type: ignore[attr-defined]


@contextlib.contextmanager
def dask_processes(folder: Path, n_workers: int = 2):
    pytest.importorskip("distributed")
    cluster = DaskProcesses(folder, n_workers)
    try:
        yield cluster.start()
    finally:
        cluster.stop()


# Helpers as fixtures: test modules cannot import this conftest by name.


@pytest.fixture()
def tgc():
    return run_tgc


@pytest.fixture()
def start_dask():
    return dask_processes


@pytest.fixture()
def engine_options():
    return list(ENGINE_OPTIONS)


@pytest.fixture()
def tgc_args():
    """:func:`command_line`."""
    return command_line


@pytest.fixture()
def tgc_main():
    """:func:`run_main`."""
    return run_main


@pytest.fixture()
def manifest_of():
    return read_manifest


@pytest.fixture()
def child_env():
    return subprocess_env()
