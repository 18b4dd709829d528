"""Packaging: `pip install .` metadata, the `tgc` entry point, no QGIS import."""

from __future__ import annotations

import configparser
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from tuned_grid_clustering.cli.main import EXIT_BAD_INPUT, main

REPO = Path(__file__).resolve().parents[2]
PLUGINS_DIR = REPO / ".build" / "plugins"


def _pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    return tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))


def test_version_matches_metadata_txt():
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(REPO / "metadata.txt", encoding="utf-8")
    assert _pyproject()["project"]["version"] == parser["general"]["version"]

    from tuned_grid_clustering.cli.manifest import package_version

    assert package_version() == parser["general"]["version"]


def test_package_layout_and_entry_point():
    project = _pyproject()
    assert project["project"]["scripts"]["tgc"] == "tuned_grid_clustering.cli.main:main"
    setuptools = project["tool"]["setuptools"]
    assert setuptools["package-dir"] == {"tuned_grid_clustering": "."}
    packages = set(setuptools["packages"])
    assert {"tuned_grid_clustering.core", "tuned_grid_clustering.cli"} <= packages
    assert not any(p.split(".")[-1] in {"test", "bench", "tools", "aws"} for p in packages)
    extras = project["project"]["optional-dependencies"]
    assert {"cli", "dask", "aws", "test"} <= set(extras)


def test_importing_the_package_never_imports_qgis():
    code = (
        "import sys\n"
        "import tuned_grid_clustering, tuned_grid_clustering.core\n"
        "import tuned_grid_clustering.core.partitions\n"
        "import tuned_grid_clustering.cli.main, tuned_grid_clustering.cli.batch\n"
        "import tuned_grid_clustering.cli.job, tuned_grid_clustering.cli.io\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('qgis', 'PyQt5'))\n"
        "assert not bad, bad\n"
    )
    subprocess.run(
        [sys.executable, "-c", code],
        check=True,
        env={"PYTHONPATH": str(PLUGINS_DIR)},
        timeout=120,
    )


def test_version_option(capsys):
    with pytest.raises(SystemExit) as stopped:
        main(["--version"])
    assert stopped.value.code == 0
    assert capsys.readouterr().out.startswith("tgc ")


@pytest.mark.skipif(
    importlib.util.find_spec("geopandas") is not None, reason="geopandas is installed"
)
def test_without_geopandas_the_cli_says_what_to_install(tmp_path, capsys):
    code = main(
        [
            "cluster",
            str(tmp_path / "in.parquet"),
            "-o",
            str(tmp_path / "out.gpkg"),
            "--target-weight",
            "240",
            "--radius",
            "1000",
        ]
    )
    assert code == EXIT_BAD_INPUT
    assert "tuned_grid_clustering[cli]" in capsys.readouterr().err
