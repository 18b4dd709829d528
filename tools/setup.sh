# Sourced by tools/demo.sh and tools/test.sh: installs what the project needs.
# Works as root (CI, containers) and as a user with sudo.
# shellcheck shell=bash

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="$REPO/.build"

# Debian 12 packages: QGIS and the dependency floors of core/ (optuna is
# optional; the tests of ClusteringResult.optuna_study() use it).
SYSTEM_PACKAGES=(
  qgis python3-qgis qgis-providers
  python3-numpy python3-scipy python3-pandas python3-optuna
  python3-shapely python3-pyproj python3-venv python3-pip
  python3-sklearn  # only bench/bench_refine.py's plain k-means start
  python3-pytest python3-hypothesis
)

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

install_system_packages() {
  local missing=()
  local pkg
  for pkg in "${SYSTEM_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
      || missing+=("$pkg")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    echo "Installing Debian packages: ${missing[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
  fi
}

# Environment for QGIS without a display, with this checkout as the plugin
# (a profile under .build/, so the user's own QGIS profile is never touched).
qgis_environment() {
  export TGC_QGIS_CONFIG="$BUILD/qgis-profile"
  mkdir -p "$TGC_QGIS_CONFIG"
  # shellcheck source=tools/qgis_env.sh
  source "$REPO/tools/qgis_env.sh"
  # Debian's /usr/bin/qgis_process wrapper passes an option 3.22 rejects.
  QGIS_PROCESS=/usr/bin/qgis_process.bin
}

# Debian's Python with the system packages (the floors) plus test plugins.
floor_venv() {
  local venv="$BUILD/venv-debian"
  if [ ! -x "$venv/bin/python" ]; then
    /usr/bin/python3 -m venv --system-site-packages "$venv"
  fi
  "$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$REPO/requirements-dev.txt"
  FLOOR_PYTHON="$venv/bin/python"
}

# A clean venv with the newest releases from PyPI, for core/ only.
latest_venv() {
  local venv="$BUILD/venv-latest"
  if [ ! -x "$venv/bin/python" ]; then
    /usr/bin/python3 -m venv "$venv"
  fi
  "$venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade \
    -r "$REPO/requirements.txt" optuna pytest hypothesis
  LATEST_PYTHON="$venv/bin/python"
}
