"""Which third-party packages core/ needs, and how to install the missing ones.

Imports nothing heavy, so the plugin can load and explain itself when a
package is missing.
"""

from __future__ import annotations

import importlib.util

# import name -> distribution name on PyPI
REQUIRED_PACKAGES = {
    "numpy": "numpy",
    "scipy": "scipy",
    "pandas": "pandas",
    "shapely": "shapely",
    "pyproj": "pyproj",
}

# Not needed to cluster or select: only ClusteringResult.optuna_study(), which
# hands a search to Optuna's own tools, imports it.
OPTIONAL_PACKAGES = {
    "optuna": "optuna",
}

_DEBIAN_PACKAGES = {
    "numpy": "python3-numpy",
    "scipy": "python3-scipy",
    "pandas": "python3-pandas",
    "optuna": "python3-optuna",
    "shapely": "python3-shapely",
    "pyproj": "python3-pyproj",
}


def missing_packages() -> list[str]:
    """Return the import names of required packages that cannot be imported."""
    return [name for name in REQUIRED_PACKAGES if importlib.util.find_spec(name) is None]


def install_instructions(missing: list[str], purpose: str | None = None) -> str:
    """A message naming the missing packages and the install command per platform.

    ``purpose`` says what needs an optional package (default: the plugin itself).
    """
    names = {**REQUIRED_PACKAGES, **OPTIONAL_PACKAGES}
    pypi = " ".join(names[name] for name in missing)
    debian = " ".join(_DEBIAN_PACKAGES[name] for name in missing)
    who = purpose or "Tuned Grid Clustering"
    return (
        f"{who} needs these Python packages, which are missing: {pypi}.\n"
        f"Install them, then restart QGIS (or Python):\n"
        f"- Debian/Ubuntu: sudo apt install {debian}\n"
        f"- Windows: open the OSGeo4W Shell and run: python -m pip install {pypi}\n"
        f"- macOS: /Applications/QGIS.app/Contents/MacOS/bin/python3 -m pip install {pypi}\n"
        f"- elsewhere: python -m pip install {pypi}"
    )
