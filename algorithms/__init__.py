"""Processing algorithms: thin adapters between QGIS and core/ (see common.py)."""
