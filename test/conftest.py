"""Make the plugin importable as ``tuned_grid_clustering``, as QGIS does.

The repository root *is* the plugin folder, but a checkout may be named
anything, so tests import it through the link ``.build/plugins/tuned_grid_clustering``
(the same folder ``QGIS_PLUGINPATH`` points at for ``qgis_process``).
"""

import contextlib
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PLUGINS_DIR = REPO / ".build" / "plugins"
SHARED_DATA = REPO.parent / "shared" / "data"


def _link_plugin() -> None:
    PLUGINS_DIR.mkdir(parents=True, exist_ok=True)
    link = PLUGINS_DIR / "tuned_grid_clustering"
    if not link.exists():
        with contextlib.suppress(FileExistsError):  # another process made it meanwhile
            link.symlink_to(REPO, target_is_directory=True)
    if str(PLUGINS_DIR) not in sys.path:
        sys.path.insert(0, str(PLUGINS_DIR))


_link_plugin()
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
