"""Command line (``tgc``), Dask batch runs and the shared per-partition job.

Nothing here imports QGIS. The optional packages (geopandas, pyarrow,
pyogrio for ``[cli]``; dask and tqdm for ``[dask]``) are imported only when
a command needs them, so ``import tuned_grid_clustering.cli`` always works.
"""
