"""The run manifest: a JSON record of what was run, on what, and what happened.

It lists the settings (with the seed), every input file with its SHA-256,
the package version, and per partition its status, error, timings and
output files with their SHA-256. ``tgc batch`` rewrites it after every
finished partition (atomically), which is what makes a run resumable.
"""

from __future__ import annotations

import configparser
import datetime as _dt
import json
import os
import platform
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

MANIFEST_FORMAT = 1
PACKAGE_ROOT = Path(__file__).resolve().parents[1]


def package_version() -> str:
    """Version from ``metadata.txt`` (the plugin's), else the installed distribution's."""
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read(PACKAGE_ROOT / "metadata.txt", encoding="utf-8")
        return parser["general"]["version"].strip()
    except (KeyError, OSError, configparser.Error):
        pass
    try:
        from importlib.metadata import version

        return version("tuned_grid_clustering")
    except Exception:  # noqa: BLE001 - unknown is better than a crash in a record
        return "unknown"


def _library_versions() -> dict[str, str]:
    versions = {}
    for name in (
        "numpy",
        "scipy",
        "pandas",
        "optuna",
        "shapely",
        "pyproj",
        "geopandas",
        "pyarrow",
        "pyogrio",
        "dask",
        "distributed",
    ):
        module = sys.modules.get(name)
        if module is not None:
            versions[name] = str(getattr(module, "__version__", "?"))
    return versions


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def new_manifest(
    *,
    command: str,
    settings: Mapping[str, Any],
    inputs: list[dict[str, Any]],
    argv: list[str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A manifest with no partition finished yet."""
    manifest: dict[str, Any] = {
        "format": MANIFEST_FORMAT,
        "tool": "tuned_grid_clustering",
        "package_version": package_version(),
        "command": command,
        "argv": list(argv) if argv is not None else None,
        "created": now_iso(),
        "updated": now_iso(),
        "python": platform.python_version(),
        "libraries": _library_versions(),
        "settings": dict(settings),
        "seed": settings.get("params", {}).get("random_state", 42),
        "inputs": inputs,
        "partitions": {},
        "summary": {},
    }
    if extra:
        manifest.update(extra)
    return manifest


def summarize(partitions: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Counts and the failed partitions' errors."""
    failed = {
        name: entry.get("error")
        for name, entry in partitions.items()
        if entry.get("status") != "ok"
    }
    total = len(partitions)
    return {
        "n_partitions": total,
        "n_ok": total - len(failed),
        "n_failed": len(failed),
        "failed_share": (len(failed) / total) if total else 0.0,
        "failed": failed,
        "n_units": int(sum(entry.get("n_units") or 0 for entry in partitions.values())),
        "n_clusters": int(sum(entry.get("n_clusters") or 0 for entry in partitions.values())),
        "seconds": round(sum(entry.get("seconds") or 0.0 for entry in partitions.values()), 3),
    }


def write_manifest(manifest: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write atomically (temporary file + rename): readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    manifest["updated"] = now_iso()
    manifest["summary"] = summarize(manifest.get("partitions", {}))
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            json.dump(manifest, stream, indent=2, sort_keys=False, default=_json_default)
            stream.write("\n")
        os.replace(name, path)
    finally:
        if os.path.exists(name):
            os.unlink(name)
    return path


def read_manifest(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The manifest at ``path``, or None if there is none."""
    path = Path(path)
    if not path.is_file():
        return None
    with open(path, encoding="utf-8") as stream:
        return json.load(stream)


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
