"""Processing algorithm ``gridsampling:tunedgridclusteringraster``: cluster a population raster.

The populated cells of a band are read in blocks of rows (:mod:`.raster_input`),
optionally assigned to partition polygons by their centres, and clustered by
core exactly as the vector algorithm clusters the same cells as points: both
hand core the cells in row-major order from the north-west, with the same
neighbour graph (cells sharing an edge or a corner).
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsFeatureRequest,
    QgsFeatureSource,
    QgsField,
    QgsFields,
    QgsGeometry,
    QgsProcessing,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeatureSource,
    QgsProcessingFeedback,
    QgsProcessingParameterBand,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFeatureSink,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterField,
    QgsProcessingParameterRasterLayer,
    QgsWkbTypes,
)
from qgis.PyQt.QtCore import QVariant

from . import common, raster_input
from .fields import unit_cluster_fields
from .grids import RegularGrid, grid_order
from .metric_crs import choose_metric_crs, to_metric
from .outlines import grid_cell_outlines

_HELP_SOURCE = """<p>Groups the populated cells of a population raster (WorldPop, GHS-POP, a
3-arc-second grid…) into compact clusters of about a target weight (population) and radius,
e.g. primary sampling units (PSUs) for a household survey. The clustering is that of
<i>Tuned Grid Clustering</i> (a weighted k-means tuned by a search over k, extra passes
for clusters above the maximum weight, then guaranteed PSUs: contiguous clusters in the
weight range and under the maximum radius); the same cells as grid points give the same
clusters.</p>
<h3>Parameters</h3>
<ul>
<li><b>Population raster</b> (INPUT) and <b>band</b> (BAND): each cell's value is its weight.
The raster may be in lon/lat (e.g. EPSG:4326) or in a projected CRS; it is read a block
of rows at a time, so large rasters fit in memory.</li>
<li><b>Keep cells with value 0</b> (INCLUDE_ZERO, default off): nodata cells and cells whose
value is 0 or less are <b>left out</b>; with this option, cells of value 0 are kept
(negative cells are always left out). The counts are written to the log.</li>
<li><b>Partition polygons</b> (PARTITIONS, optional) and <b>partition field</b>
(PARTITION_FIELD): strata or administrative areas. Each cell goes to the polygon holding
its centre; each partition is clustered on its own, so no cluster crosses a partition,
and cluster IDs carry the partition (<code>1102305007/CLUSTER_001</code>). Cells outside
every polygon are left out (their count and weight are in the log and the report);
polygons holding no populated cell are named in a warning. Partitions run in parallel
with N_JOBS threads; a partition that fails is named in the log and the report, its cells
get the status <code>failed</code> and no cluster, and the others are kept.</li>
<li><b>Per-partition targets</b> (TARGET_WEIGHT_FIELD, MIN_WEIGHT_FIELD, MAX_WEIGHT_FIELD,
TARGET_RADIUS_FIELD, optional): numeric fields of the partition layer, e.g. a target radius
of 1000 m for urban and 2000 m for rural areas. One value per partition (polygons of
one partition must agree); NULL means the constant parameter.</li>
<li><b>Target cluster weight</b> (TARGET_WEIGHT), <b>target cluster radius</b>
(TARGET_RADIUS, metres) and <b>weight importance</b> (WEIGHT_IMPORTANCE) steer the k-means
search.</li>
<li><b>Minimum / maximum cluster weight</b> (MIN_WEIGHT, MAX_WEIGHT, optional) and
<b>maximum cluster radius</b> (MAX_RADIUS, optional, metres): the range and cap of
guaranteed PSUs; clusters above the maximum weight are also split in extra passes (up to
MAX_PASSES). Where people are too few to fit the cap, as few clusters as possible stay
wider (status radius_over_max), the widest never getting wider.</li>
<li><b>Contiguous clusters</b> (CONTIGUITY, default on): every cluster is one connected
group of cells sharing an edge or a corner.</li>
<li><b>Output geometry</b> (OUTPUT_GEOMETRY): one square polygon per cell (default) or its
centre point.</li>
<li>Advanced: NEIGHBOUR_DISTANCE (not used for rasters: cells are neighbours when they
touch), BRIDGE_DISTANCE (metres, with a minimum weight: links a group of cells lighter than
the minimum that touches no other populated cell to the nearest other group within this gap,
so it can join a PSU), INITIAL_TRIALS, SUBSEQUENT_TRIALS, DISTANCE_CRS (projected CRS in metres for
distances; default the raster CRS if metric, else the UTM zone of the data), SEED and
N_JOBS (threads; results do not depend on it).</li>
</ul>
<h3>Outputs</h3>
<ul>
<li><b>Cells with clusters</b> (OUTPUT): one feature per clustered cell with
<code>row</code>, <code>col</code> (in the raster), <code>weight</code> (the cell value),
<code>partition</code> (with partitions), <code>cluster_id</code>,
<code>cluster_weight</code>, <code>cluster_radius_m</code>, <code>cluster_pass</code> and
<code>cluster_status</code>.</li>
<li><b>Clusters</b> (OUTPUT_CLUSTERS): the union of each cluster's cells, with
<code>cluster_id, weight, radius_m, n_units, area_km2, pass, status</code>.</li>
<li>Status: <code>ok</code>, <code>single_unit_over_max</code>,
<code>island_under_min</code>, <code>radius_over_max</code>, <code>under_min</code>,
<code>over_max</code>, or <code>failed</code> (failed partition).</li>
<li><b>Report</b> (OUTPUT_REPORT, optional): HTML page with the parameters, trials,
distributions, quality checks and what was left out.</li>
<li>N_CLUSTERS, BEST_K, SHARE_IN_RANGE, SHARE_CONTIGUOUS, SHARE_WITHIN_RADIUS,
SHARE_OK (shares of clusters, 0 to 1).</li>
</ul>
<p>Needs the Python packages scipy, pandas, shapely and pyproj.</p>
"""
HELP = re.sub(r"\s*\n\s*", " ", _HELP_SOURCE).strip()

GEOMETRY_POLYGONS = 0
GEOMETRY_POINTS = 1


class TunedGridClusteringRasterAlgorithm(common.TunedClusteringAlgorithmBase):
    """Cluster the populated cells of a raster band into units of a target weight and radius."""

    INPUT = "INPUT"
    BAND = "BAND"
    INCLUDE_ZERO = "INCLUDE_ZERO"
    PARTITIONS = "PARTITIONS"
    OUTPUT_GEOMETRY = "OUTPUT_GEOMETRY"
    INPUT_TAGS = ("raster", "worldpop")

    # -- identity -----------------------------------------------------------

    def name(self) -> str:
        return "tunedgridclusteringraster"

    def displayName(self) -> str:
        return "Tuned Grid Clustering (population raster)"

    def shortHelpString(self) -> str:
        return HELP

    def shortDescription(self) -> str:
        return "Cluster the populated cells of a raster into survey PSUs of a target weight."

    def createInstance(self) -> TunedGridClusteringRasterAlgorithm:
        return TunedGridClusteringRasterAlgorithm()

    # -- parameters ---------------------------------------------------------

    def initAlgorithm(self, config: dict | None = None) -> None:
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, "Population raster"))
        self.addParameter(
            # Optional, so that a run without BAND takes band 1: QGIS 3.22 refuses
            # a missing mandatory band even when it has a default.
            QgsProcessingParameterBand(
                self.BAND,
                "Band (cell value = weight; empty: band 1)",
                defaultValue=1,
                parentLayerParameterName=self.INPUT,
                optional=True,
            )
        )
        self.addParameter(
            QgsProcessingParameterBoolean(
                self.INCLUDE_ZERO,
                "Keep cells with value 0 (nodata and negatives are left out)",
                False,
            )
        )
        self.addParameter(
            QgsProcessingParameterFeatureSource(
                self.PARTITIONS,
                "Partition polygons (strata: clusters never cross them)",
                [QgsProcessing.TypeVectorPolygon],
                optional=True,
            )
        )
        self.addParameter(
            QgsProcessingParameterField(
                self.PARTITION_FIELD,
                "Partition field (names each partition)",
                parentLayerParameterName=self.PARTITIONS,
                optional=True,
            )
        )
        self._add_target_parameters()
        self._add_per_partition_fields(self.PARTITIONS, "partition layer")
        self.addParameter(
            QgsProcessingParameterEnum(
                self.OUTPUT_GEOMETRY,
                "Output geometry of the cells",
                ["Cell polygons", "Cell centre points"],
                defaultValue=GEOMETRY_POLYGONS,
            )
        )
        self._add_advanced_parameters()
        self.addParameter(
            QgsProcessingParameterFeatureSink(
                self.OUTPUT, "Cells with clusters", QgsProcessing.TypeVectorAnyGeometry
            )
        )
        self._add_cluster_outputs()

    # -- run ----------------------------------------------------------------

    def processAlgorithm(
        self, parameters: dict, context: QgsProcessingContext, feedback: QgsProcessingFeedback
    ) -> dict[str, Any]:
        settings = self._checked_settings(parameters, context)
        layer = self.parameterAsRasterLayer(parameters, self.INPUT, context)
        if layer is None:
            raise QgsProcessingException(self.invalidRasterError(parameters, self.INPUT))
        band = self.parameterAsInt(parameters, self.BAND, context)
        raster_input.check_band(layer, band)
        include_zero = self.parameterAsBoolean(parameters, self.INCLUDE_ZERO, context)
        as_points = (
            self.parameterAsEnum(parameters, self.OUTPUT_GEOMETRY, context) == GEOMETRY_POINTS
        )
        partition_source = self.parameterAsSource(parameters, self.PARTITIONS, context)
        partition_field = self.parameterAsString(parameters, self.PARTITION_FIELD, context) or None
        target_fields = self._per_partition_fields(parameters, context)
        if partition_source is None and (partition_field or target_fields):
            raise QgsProcessingException(
                "PARTITION_FIELD and the per-partition target fields are fields of the partition "
                "polygons: choose a PARTITIONS layer, or leave them empty."
            )
        if partition_source is not None and not partition_field:
            raise QgsProcessingException(
                "Choose the PARTITION_FIELD of the PARTITIONS layer: the field that names each "
                "partition (stratum, admin area)."
            )
        raster_crs = layer.crs()
        if not raster_crs.isValid():
            raise QgsProcessingException(
                "The raster has no coordinate reference system, so distances cannot be measured. "
                "Set its CRS (Layer Properties > Source) or assign one with 'Assign projection'."
            )

        cells = raster_input.read_populated_cells(
            layer, band, include_zero=include_zero, feedback=feedback, progress_span=(0.0, 5.0)
        )
        notes = _left_out_notes(cells, include_zero)
        for note in notes:
            feedback.pushInfo(note)
        if cells.n == 0:
            raise QgsProcessingException(
                f"Band {band} of the raster '{layer.name()}' has no populated cell (cells with a "
                f"value {'of 0 or more' if include_zero else 'above 0'} that is not nodata). "
                f"{' '.join(notes)} Check the band, the raster's nodata value, or tick "
                "INCLUDE_ZERO to keep cells of value 0."
            )
        rows, cols, values = cells.rows, cells.cols, cells.values
        feedback.pushInfo(
            f"{cells.n:,} populated cells (total weight {values.sum():,.1f}) read with "
            f"{cells.reader}."
        )

        partitions = None
        per_partition_params = None
        if partition_source is not None:
            keep, partitions, per_partition_params, partition_notes = self._assign_partitions(
                partition_source,
                partition_field,
                target_fields,
                cells,
                raster_crs,
                settings,
                context,
                feedback,
            )
            notes += partition_notes
            rows, cols, values = rows[keep], cols[keep], values[keep]
            del keep
        feedback.setProgress(7)

        grid = cells.grid
        n_read = cells.n
        del cells  # only the cells kept are needed from here on
        requested_crs = self.parameterAsCrs(parameters, self.DISTANCE_CRS, context)
        # The centres of the corner cells span the same box as all centres.
        corners = grid.centres(
            np.array([rows.min(), rows.max()]), np.array([cols.min(), cols.max()])
        )
        metric_crs = choose_metric_crs(
            raster_crs, corners, requested_crs, context.transformContext(), feedback
        )
        xy_metric = _metric_centres(
            grid, rows, cols, raster_crs, metric_crs, context.transformContext()
        )
        # After require_dependencies (scipy).
        from ..core.adjacency import cell_adjacency
        from ..core.partitions import PerPartition

        regular = RegularGrid(grid.lattice(), column=cols, row=rows)
        # Each partition's graph is made when it is clustered: the whole
        # raster's graph would be the largest thing in memory.
        neighbours = PerPartition(
            lambda units, cols=cols, rows=rows: cell_adjacency(cols[units], rows[units]).matrix
        )
        neighbour_text = "raster cells sharing an edge or a corner (8 neighbours)"
        feedback.pushInfo(f"Neighbours: {neighbour_text}.")
        if settings.neighbour_distance is not None:
            feedback.pushInfo("NEIGHBOUR_DISTANCE is not used for rasters: cells touch or not.")
        # Row-major from the north-west, whatever the raster's orientation.
        order = grid_order(regular)
        xy_metric, values_in_order, partitions = common.in_order(
            order, xy_metric, values, partitions
        )
        feedback.setProgress(10)

        run = common.run_clustering(
            xy_metric,
            values_in_order,
            partitions,
            settings,
            feedback,
            per_partition_params=per_partition_params,
            adjacency=neighbours,
            order=order,
            progress_span=(10.0, 85.0),
        )
        # Memory grows with the output from here: drop what only clustering needed.
        del neighbours, xy_metric, order, values_in_order
        common.release_freed_memory()
        feedback.pushInfo(f"{run.result.n_clusters} clusters (best k in pass 1: {run.best_k}).")

        dest_id, closing = self._write_cells(
            parameters,
            context,
            feedback,
            raster_crs,
            grid,
            rows,
            cols,
            values,
            run,
            as_points,
        )
        common.release_freed_memory()  # the features written
        try:  # the OUTPUT file is closed meanwhile (BackgroundSink)
            polygons = grid_cell_outlines(regular, run.assignment.codes, run.assignment.n_clusters)
            report_parameters = {
                self.INPUT: f"{layer.name()} ({n_read:,} populated cells)",
                self.BAND: band,
                self.INCLUDE_ZERO: include_zero,
                self.PARTITIONS: (
                    f"{partition_source.sourceName()} ({partition_source.featureCount()} polygons)"
                    if partition_source is not None
                    else "(none)"
                ),
                self.PARTITION_FIELD: partition_field or "(none)",
                **target_fields,
                **settings.report_items(),
                "Neighbours": neighbour_text,
                self.DISTANCE_CRS: f"{metric_crs.authid()} {metric_crs.description()}",
                self.OUTPUT_GEOMETRY: "cell centre points" if as_points else "cell polygons",
                "Cluster polygons": "union of the clusters' raster cells",
            }
            return self._write_cluster_outputs(
                parameters,
                context,
                feedback,
                run,
                polygons,
                raster_crs,
                dest_id,
                report_parameters,
                notes,
                closing,
            )
        finally:
            closing.wait()

    # -- partitions ---------------------------------------------------------

    def _assign_partitions(
        self,
        source: QgsFeatureSource,
        partition_field: str,
        target_fields: dict[str, str],
        cells: raster_input.PopulatedCells,
        raster_crs: QgsCoordinateReferenceSystem,
        settings: common.ClusterSettings,
        context: QgsProcessingContext,
        feedback: QgsProcessingFeedback,
    ) -> tuple[np.ndarray, Any, dict, list[str]]:
        """Partition of each cell by its centre.

        Returns the mask of cells inside a partition, their partitions (a
        pandas Categorical), the per-partition parameters for core and notes
        for the report.
        """
        fields = source.fields()
        indices = {}
        for name in [partition_field, *target_fields.values()]:
            index = fields.lookupField(name)
            if index < 0:
                raise QgsProcessingException(
                    f"The field '{name}' is not in the partition layer. Choose one of its fields."
                )
            indices[name] = index
        request = QgsFeatureRequest()
        request.setSubsetOfAttributes(sorted(set(indices.values())))
        request.setDestinationCrs(raster_crs, context.transformContext())
        feature_ids: list[int] = []
        raw_keys: list[Any] = []
        columns: dict[str, tuple[str, list]] = {
            parameter: (name, []) for parameter, name in target_fields.items()
        }
        wkbs: list[bytes | None] = []
        for feature in source.getFeatures(
            request, QgsProcessingFeatureSource.FlagSkipGeometryValidityChecks
        ):
            if feedback.isCanceled():
                raise QgsProcessingException("Cancelled.")
            feature_ids.append(feature.id())
            raw_keys.append(feature.attribute(indices[partition_field]))
            for _, (name, values) in columns.items():
                values.append(feature.attribute(indices[name]))
            geometry = feature.geometry()
            empty = geometry.isNull() or geometry.isEmpty()
            wkbs.append(None if empty else bytes(geometry.asWkb()))
        if not feature_ids:
            raise QgsProcessingException(
                "The partition layer has no features (or none is selected while 'Selected "
                "features only' is ticked). Choose a layer of partition polygons."
            )
        polygon_keys = common.partition_keys(
            raw_keys, partition_field, ids=feature_ids, what="partition polygon"
        )
        targets = common.per_partition_targets(polygon_keys, columns, what="partition polygon")

        located = raster_input.rasterise_partitions(
            cells.grid, cells.rows, cells.cols, wkbs, is_cancelled=feedback.isCanceled
        )
        inside = located.polygon >= 0
        notes: list[str] = []
        n_outside = int(np.count_nonzero(~inside))
        if n_outside:
            weight_outside = float(cells.values[~inside].sum())
            note = (
                f"{n_outside:,} populated cells (weight {weight_outside:,.1f}) lie outside every "
                "partition polygon and were left out."
            )
            feedback.pushWarning(note + " Extend the partitions to cover them if they matter.")
            notes.append(note)
        if not inside.any():
            raise QgsProcessingException(
                f"None of the {cells.n:,} populated cells has its centre inside a partition "
                "polygon. Check that PARTITIONS covers the raster (and that both have the "
                "right CRS)."
            )
        if located.n_overlapping:
            note = (
                f"{located.n_overlapping:,} cells lie in more than one partition polygon; each "
                "went to the last of them."
            )
            feedback.pushWarning(note + " Partition polygons should not overlap.")
            notes.append(note)
        partitions = common.partition_categories(located.polygon[inside], polygon_keys)
        del located
        present = common.present_partitions(partitions)
        empty = sorted(
            {common.partition_label(k) for k in polygon_keys.tolist()}
            - {common.partition_label(k) for k in present}
        )
        if empty:
            shown = ", ".join(empty[:10]) + (", …" if len(empty) > 10 else "")
            note = f"{len(empty)} partitions hold no populated cell: {shown}."
            feedback.pushWarning(note)
            notes.append(note)
        per_partition_params = common.partition_parameters(present, targets, settings)
        feedback.pushInfo(
            f"{len(present)} partitions from '{partition_field}'"
            + (f"; {len(per_partition_params)} with their own targets." if targets else ".")
        )
        return inside, partitions, per_partition_params, notes

    # -- writing ------------------------------------------------------------

    def _write_cells(
        self,
        parameters: dict,
        context: QgsProcessingContext,
        feedback: QgsProcessingFeedback,
        crs: QgsCoordinateReferenceSystem,
        grid: raster_input.RasterGrid,
        rows: np.ndarray,
        cols: np.ndarray,
        values: np.ndarray,
        run: common.ClusteringRun,
        as_points: bool,
    ) -> tuple[str, common.BackgroundSink]:
        """OUTPUT: one feature per clustered cell; the sink is being closed when this returns."""
        assignment = run.assignment
        with_partition = run.partitioned
        fields = QgsFields()
        fields.append(QgsField("row", QVariant.Int))
        fields.append(QgsField("col", QVariant.Int))
        fields.append(QgsField("weight", QVariant.Double))
        if with_partition:
            fields.append(QgsField("partition", QVariant.String))
        for added in unit_cluster_fields():
            fields.append(added)
        wkb_type = QgsWkbTypes.Point if as_points else QgsWkbTypes.Polygon
        sink, dest_id = self.parameterAsSink(
            parameters, self.OUTPUT, context, fields, wkb_type, crs
        )
        if sink is None:
            raise QgsProcessingException(self.invalidSinkError(parameters, self.OUTPUT))
        partition_names = _partition_names(run.result) if with_partition else None

        def chunk(start: int, stop: int) -> tuple[list[QgsGeometry], list[list]]:
            if as_points:
                centres = grid.centres(rows[start:stop], cols[start:stop])
                geometries = common.point_geometries(centres[:, 0], centres[:, 1])
            else:
                # The corners as grid.cell_box computes them, for a chunk at once.
                chunk_rows, chunk_cols = rows[start:stop], cols[start:stop]
                x_a = grid.origin_x + chunk_cols * grid.pixel_width
                x_b = grid.origin_x + (chunk_cols + 1) * grid.pixel_width
                y_a = grid.origin_y + chunk_rows * grid.pixel_height
                y_b = grid.origin_y + (chunk_rows + 1) * grid.pixel_height
                geometries = common.rectangle_geometries(
                    np.minimum(x_a, x_b),
                    np.minimum(y_a, y_b),
                    np.maximum(x_a, x_b),
                    np.maximum(y_a, y_b),
                )
            columns = [
                rows[start:stop].tolist(),
                cols[start:stop].tolist(),
                values[start:stop].tolist(),
            ]
            if partition_names is not None:
                names, codes = partition_names
                columns.append(names[codes[start:stop]].tolist())
            columns += assignment.unit_columns(slice(start, stop))
            return geometries, columns

        holder = [sink]
        del sink
        writer = common.BackgroundSink(holder, self.OUTPUT)
        common.write_new_features(writer, fields, rows.shape[0], chunk, feedback, (85.0, 95.0))
        return dest_id, writer


def _metric_centres(
    grid: raster_input.RasterGrid,
    rows: np.ndarray,
    cols: np.ndarray,
    raster_crs: QgsCoordinateReferenceSystem,
    metric_crs: QgsCoordinateReferenceSystem,
    transform_context: Any,
) -> np.ndarray:
    """The cells' centres in ``metric_crs``, projected a chunk at a time.

    Only the metric coordinates are held for every cell; the centres in the
    raster's CRS exist a chunk at a time (they are made again when written).
    """
    xy = np.empty((rows.shape[0], 2), dtype=float)
    for start in range(0, rows.shape[0], _PROJECT_CHUNK):
        stop = start + _PROJECT_CHUNK
        centres = grid.centres(rows[start:stop], cols[start:stop])
        xy[start:stop] = to_metric(centres, raster_crs, metric_crs, transform_context)
    return xy


# Cells projected at once.
_PROJECT_CHUNK = 500_000


def _partition_names(result: Any) -> tuple[np.ndarray, np.ndarray]:
    """The name of each distinct partition (object array) and each unit's index into them."""
    names = [common.partition_label(key) for key in result.partition_values]
    return np.array([*names, None], dtype=object), result.partition_codes


def _left_out_notes(cells: raster_input.PopulatedCells, include_zero: bool) -> list[str]:
    """What the reader left out, one sentence each."""
    notes = []
    if cells.n_nodata:
        notes.append(f"{cells.n_nodata:,} nodata cells were left out.")
    if cells.n_zero and not include_zero:
        notes.append(
            f"{cells.n_zero:,} cells of value 0 were left out (tick INCLUDE_ZERO to keep them)."
        )
    if cells.n_negative:
        notes.append(
            f"{cells.n_negative:,} cells with a negative value (sum {cells.negative_sum:,.1f}) "
            "were left out."
        )
    return notes
