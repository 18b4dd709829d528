#!/usr/bin/env bash
# Installs the package with its command line (tgc) and the optional extras
# (cli, dask, aws, test) from PyPI into a venv, then prints the venv's python.
#
#   tools/install_cli.sh [VENV_DIR]        (default: .build/venv-cli)
#   PY="$(tools/install_cli.sh)" && "$PY" -m pytest test/cli
#
# The package is built from a copy of its QGIS-free files, so the checkout
# gets no build/ or *.egg-info folders.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${1:-$REPO/.build/venv-cli}"

if [ ! -x "$VENV/bin/python" ]; then
  /usr/bin/python3 -m venv "$VENV"
fi
SOURCE="$(mktemp -d)"
trap 'rm -rf "$SOURCE"' EXIT
cp -r "$REPO/pyproject.toml" "$REPO/metadata.txt" "$REPO/LICENSE" "$REPO/__init__.py" \
  "$REPO/core" "$REPO/cli" "$SOURCE/"
[ -f "$REPO/plugin.py" ] && cp "$REPO/plugin.py" "$SOURCE/"
find "$SOURCE" -name __pycache__ -prune -exec rm -rf {} +

"$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade \
  "$SOURCE[cli,dask,aws,test]" >&2
"$VENV/bin/tgc" --version >&2
echo "$VENV/bin/python"
