# Environment for running the plugin headless with qgis_process.
#
# Source it (bash):   . tools/qgis_env.sh
# then:               qgis_process.bin run gridsampling:tunedgridclustering -- INPUT=... 
#
# Sets QT_QPA_PLATFORM=offscreen, QGIS_PLUGINPATH=<repo>/.build/plugins (making
# the link .build/plugins/tuned_grid_clustering -> <repo> if needed), a
# throwaway QGIS_CUSTOM_CONFIG_PATH (your own QGIS profile is never touched;
# reused when this file is sourced again in the same shell), and enables the
# plugin there. /usr/bin/qgis_process (the wrapper) is broken on Debian 12:
# call /usr/bin/qgis_process.bin.

_tgc_repo="$(cd "$(dirname "${BASH_SOURCE[0]:-$0}")/.." && pwd)"
export QT_QPA_PLATFORM=offscreen
if [ -z "${XDG_RUNTIME_DIR:-}" ]; then  # Qt warns without one
    XDG_RUNTIME_DIR="$(mktemp -d "${TMPDIR:-/tmp}/tgc-runtime.XXXXXX")"
    export XDG_RUNTIME_DIR
fi
mkdir -p "$_tgc_repo/.build/plugins"
if [ ! -e "$_tgc_repo/.build/plugins/tuned_grid_clustering" ]; then
    ln -s "$_tgc_repo" "$_tgc_repo/.build/plugins/tuned_grid_clustering"
fi
export QGIS_PLUGINPATH="$_tgc_repo/.build/plugins"
if [ -z "${TGC_QGIS_CONFIG:-}" ] || [ ! -d "$TGC_QGIS_CONFIG" ]; then
    TGC_QGIS_CONFIG="$(mktemp -d "${TMPDIR:-/tmp}/tgc-qgis-config.XXXXXX")"
    export TGC_QGIS_CONFIG
fi
export QGIS_CUSTOM_CONFIG_PATH="$TGC_QGIS_CONFIG"
# "plugins enable" fails when the plugin is enabled already, so ask first.
if ! /usr/bin/qgis_process.bin plugins 2>/dev/null | grep -q '^\* tuned_grid_clustering$'; then
    if ! /usr/bin/qgis_process.bin plugins enable tuned_grid_clustering >/dev/null 2>&1; then
        echo "tools/qgis_env.sh: could not enable the tuned_grid_clustering plugin;" \
            "run '/usr/bin/qgis_process.bin plugins enable tuned_grid_clustering' to see why." >&2
    fi
fi
unset _tgc_repo
