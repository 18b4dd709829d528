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

echo "Step 1: clustering the demo grid into PSUs (gridsampling:tunedgridclustering) ..."
"$QGIS_PROCESS" run gridsampling:tunedgridclustering -- \
  INPUT="$OUT/demo_data/demo_grid_points.gpkg" \
  WEIGHT_FIELD=population \
  TARGET_WEIGHT=240 MIN_WEIGHT=180 MAX_WEIGHT=300 \
  TARGET_RADIUS=1000 BRIDGE_DISTANCE=1000 MAX_PASSES=20 \
  OUTPUT="$OUT/demo_clustered_cells.gpkg" \
  OUTPUT_CLUSTERS="$OUT/demo_clusters.gpkg" \
  OUTPUT_REPORT="$OUT/demo_report.html"

echo
echo "Step 2: selecting 8 PSUs with systematic PPS, 2 in reserve (gridsampling:selectpsus) ..."
"$QGIS_PROCESS" run gridsampling:selectpsus -- \
  INPUT="$OUT/demo_clusters.gpkg" SIZE_FIELD=weight \
  SAMPLE_SIZE=8 N_REPLACEMENTS=2 SEED=2026 \
  OUTPUT="$OUT/demo_sample.gpkg" \
  OUTPUT_FRAME="$OUT/demo_frame.gpkg" \
  OUTPUT_REPORT="$OUT/demo_sample_report.html"

echo
echo "Done. Open these in QGIS or a browser:"
echo "  $OUT/demo_clustered_cells.gpkg  every grid point with its cluster_id and status"
echo "  $OUT/demo_clusters.gpkg         one polygon per cluster (PSU)"
echo "  $OUT/demo_report.html           tuning trials, weight and radius distributions, checks"
echo "  $OUT/demo_sample.gpkg           the selected PSUs with pi and design_weight"
echo "  $OUT/demo_frame.gpkg            every PSU with its inclusion probability pi"
echo "  $OUT/demo_sample_report.html    the selection, per stratum"
