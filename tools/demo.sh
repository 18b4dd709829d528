#!/usr/bin/env bash
# The main job, end to end: installs QGIS and the plugin's dependencies, makes
# the synthetic demo population grid, clusters it with qgis_process and writes
# the clustered cells, the cluster polygons and the HTML report to output/.
set -euo pipefail
source "$(dirname "$0")/setup.sh"
cd "$REPO"

install_system_packages
qgis_environment

OUT="$REPO/output"
mkdir -p "$OUT"
/usr/bin/python3 tools/make_demo_data.py "$OUT/demo_data"

echo "Clustering the demo grid with gridsampling:tunedgridclustering ..."
"$QGIS_PROCESS" run gridsampling:tunedgridclustering -- \
  INPUT="$OUT/demo_data/demo_grid_points.gpkg" \
  WEIGHT_FIELD=population \
  TARGET_WEIGHT=240 TARGET_RADIUS=1000 \
  MAX_WEIGHT=300 MAX_PASSES=20 \
  OUTPUT="$OUT/demo_clustered_cells.gpkg" \
  OUTPUT_CLUSTERS="$OUT/demo_clusters.gpkg" \
  OUTPUT_REPORT="$OUT/demo_report.html"

echo
echo "Done. Open these in QGIS or a browser:"
echo "  $OUT/demo_clustered_cells.gpkg  every grid point with its cluster_id"
echo "  $OUT/demo_clusters.gpkg         one polygon per cluster"
echo "  $OUT/demo_report.html           tuning trials, weight and radius distributions"
