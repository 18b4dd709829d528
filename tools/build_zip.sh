#!/usr/bin/env bash
# Builds dist/tuned_grid_clustering-<version>.zip for QGIS's "Install from ZIP":
# one folder tuned_grid_clustering/ holding the committed plugin, without the
# tests and tooling that .gitattributes marks export-ignore, caches or .git.
set -euo pipefail
cd "$(dirname "$0")/.."
version=$(sed -n 's/^version=//p' metadata.txt)
mkdir -p dist
zip="dist/tuned_grid_clustering-$version.zip"
git archive --format=zip --prefix=tuned_grid_clustering/ -o "$zip" HEAD
if [ -n "$(git status --porcelain -- . ':!dist' ':!output')" ]; then
  echo "Note: the zip holds the last commit; uncommitted changes are not in it."
fi
echo "$zip"
