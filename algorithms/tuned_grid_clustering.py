"""Processing algorithm ``gridsampling:tunedgridclustering``: a thin adapter over core.

Reading, projecting, neighbours, partitions, writing, styling and reporting
live in :mod:`.common` (shared with the raster algorithm); the clustering
itself in ``core`` (imported lazily, so the plugin loads and explains itself
when scipy or pandas is missing).
"""

from __future__ import annotations

import re
from typing import Any

from qgis.core import (
    QgsProcessing,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingParameterFeatureSink,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterField,
)

from . import common
from .grids import grid_order, unit_grid
from .metric_crs import choose_metric_crs, to_metric
from .outlines import cluster_polygons

_HELP_SOURCE = """<p>Groups weighted units (grid points, grid cells, building footprints…) into
compact clusters of about a target weight and radius, e.g. primary sampling units (PSUs)
for a household survey. A weighted k-means is run for many numbers of clusters k around
total weight / target weight; a coarse-to-fine search keeps the k whose clusters score best:
<code>score = importance × (target radius / target weight) × |target weight − median
weight| + |target radius − median radius|</code> (radius = radius of the smallest circle
enclosing a cluster's units). With a maximum weight, extra passes split every heavier
cluster again. Then, for <b>guaranteed PSUs</b>, the clusters are repaired on the graph of
neighbouring units so that each is contiguous, weighs between the minimum and the maximum
weight and is no wider than the maximum radius, wherever the data allow it.</p>
<h3>Parameters</h3>
<ul>
<li><b>Input layer</b> (INPUT): points or (multi)polygons; "Selected features only" is
honoured. A polygon is clustered by its <i>point on surface</i> (a point always inside
it, even when concave); an invalid polygon for which that fails uses its centroid.
Features are never dropped, invalid geometries included; null or empty geometries are
refused (run "Remove null geometries").</li>
<li><b>Weight field</b> (WEIGHT_FIELD, optional): numeric, e.g. population. Without it
every feature weighs 1. NULL or negative weights are refused.</li>
<li><b>Partition field</b> (PARTITION_FIELD, optional): strata or administrative areas.
Each partition is clustered on its own, so no cluster crosses a partition; cluster IDs
carry the partition (<code>1102305007/CLUSTER_001</code>). Every feature needs a value
(NULLs are refused with their count). Partitions run in parallel with N_JOBS threads; a
partition that fails is named in the log and the report, its features get the status
<code>failed</code> and no cluster, and the others are kept (the run fails only when every
partition fails).</li>
<li><b>Per-partition targets</b> (TARGET_WEIGHT_FIELD, MIN_WEIGHT_FIELD, MAX_WEIGHT_FIELD,
TARGET_RADIUS_FIELD, optional): numeric fields of the input giving a partition its own
target weight, minimum, maximum or target radius (e.g. 1000 m urban, 2000 m rural). The
value must be the same for every feature of a partition (else the partition is named in
an error); NULL means the constant parameter.</li>
<li><b>Target cluster weight</b> (TARGET_WEIGHT): weight one cluster should reach.</li>
<li><b>Target cluster radius</b> (TARGET_RADIUS): in metres.</li>
<li><b>Weight importance</b> (WEIGHT_IMPORTANCE): how much the weight term counts
against the radius term in the score (1 = equal).</li>
<li><b>Minimum cluster weight</b> (MIN_WEIGHT, optional): lighter clusters are merged
with neighbours.</li>
<li><b>Maximum cluster weight</b> (MAX_WEIGHT, optional): clusters heavier than this
are clustered again in extra passes (at least the target weight), then split.</li>
<li><b>Maximum cluster radius</b> (MAX_RADIUS, optional, metres, at least the target
radius): wider clusters are split or redrawn with their neighbours. Where people are too
few for that (sparse places, often along the edge of the data), as few clusters as possible
stay wider, the widest never getting wider, with status radius_over_max. To have 90% of
clusters within a radius, give that radius.</li>
<li><b>Contiguous clusters</b> (CONTIGUITY, default on): every cluster is one connected
group of neighbouring units. Neighbours: units of a regular grid (grid points, inferred
from the coordinates in the layer CRS, or square grid cells) when their cells share an
edge or a corner; other polygons when they share an edge or a corner; other points when
they are Delaunay neighbours closer than the neighbour distance.</li>
<li><b>Maximum passes</b> (MAX_PASSES): limit on passes, counting the first; only
used when a maximum weight is set. Passes also stop when no cluster is too heavy or their count
stays the same for 3 passes.</li>
<li><b>Neighbour distance</b> (NEIGHBOUR_DISTANCE, advanced, optional, metres): for
scattered points only; default inferred from their spacing (twice the 90th percentile of
the nearest-neighbour distance) and written to the log.</li>
<li><b>Bridge distance</b> (BRIDGE_DISTANCE, advanced, optional, metres; needs a minimum
weight): a connected piece of the data lighter than the minimum weight (a hamlet whose cells
touch no other populated cell) is linked to the nearest other piece within this gap, so it
joins a PSU instead of standing alone as an island_under_min. Pieces heavy enough to stand
alone are never linked: a river between two towns stays a boundary. Empty: never.</li>
<li><b>Trials in the first pass / in later passes</b> (INITIAL_TRIALS,
SUBSEQUENT_TRIALS, advanced): values of k tried per search.</li>
<li><b>Distance CRS</b> (DISTANCE_CRS, advanced, optional): projected CRS in metres in
which distances are measured. Default: the layer CRS if it is projected in metres,
otherwise the WGS 84 UTM zone of the centre of the data.</li>
<li><b>Random seed</b> (SEED, advanced): same seed, same clusters. Units of a regular grid
are clustered in row-major order from the north-west, so the file's feature order does
not matter.</li>
<li><b>Threads</b> (N_JOBS, advanced): partitions run in parallel (or, without
partitions, the trials); results do not depend on it.</li>
</ul>
<h3>Outputs</h3>
<ul>
<li><b>Units with clusters</b> (OUTPUT): every input feature, geometry and attributes
unchanged, plus <code>cluster_id</code> (e.g. CLUSTER_001, or CLUSTER_001_02 when split
in pass 2), <code>cluster_weight</code>, <code>cluster_radius_m</code>,
<code>cluster_pass</code> and <code>cluster_status</code>. An input field with one of these
names (any case) is kept under the name <code>&lt;name&gt;_input</code>.</li>
<li><b>Clusters</b> (OUTPUT_CLUSTERS): one (multi)polygon per cluster with
<code>cluster_id, weight, radius_m, n_units, area_km2, pass, status</code> (and
<code>partition</code> first, with partitions). Polygon input: the
dissolve of the member polygons. Point input on a regular grid (spacing inferred from the
coordinates in the layer CRS): the union of the members' grid cells. Other points: the
convex hull of the members (buffered by 1 m when it is only a point or a line).
area_km2 is ellipsoidal.</li>
<li><b>Status</b> of a cluster: <code>ok</code>; <code>single_unit_over_max</code> (one unit
heavier than the maximum on its own); <code>island_under_min</code> (too light, with no
neighbouring cluster to merge with); <code>radius_over_max</code>; <code>under_min</code>;
<code>over_max</code>; <code>failed</code> for the features of a failed partition.</li>
<li><b>Report</b> (OUTPUT_REPORT, optional): HTML page with the parameters, the trials,
the weight and radius distributions and the quality checks, shown in the Results
Viewer.</li>
<li>N_CLUSTERS and BEST_K: number of clusters and the k chosen in the first pass (summed
over partitions). SHARE_IN_RANGE, SHARE_CONTIGUOUS, SHARE_WITHIN_RADIUS and SHARE_OK:
shares (0 to 1) of the clusters in the weight range, contiguous, within the maximum
radius, and meeting every constraint.</li>
</ul>
<p>Loaded outputs are coloured by cluster_id. Needs the Python packages scipy,
pandas, shapely and pyproj.</p>
"""
# Processing's help panel turns line breaks into paragraph breaks: keep one line.
HELP = re.sub(r"\s*\n\s*", " ", _HELP_SOURCE).strip()


class TunedGridClusteringAlgorithm(common.TunedClusteringAlgorithmBase):
    """Cluster weighted points or polygons into units of a target weight and radius."""

    INPUT = "INPUT"
    WEIGHT_FIELD = "WEIGHT_FIELD"
    INPUT_TAGS = ("grid", "optuna")

    # -- identity -----------------------------------------------------------

    def name(self) -> str:
        return "tunedgridclustering"

    def displayName(self) -> str:
        return "Tuned Grid Clustering"

    def shortHelpString(self) -> str:
        return HELP

    def shortDescription(self) -> str:
        return "Cluster weighted points or polygons into survey PSUs of a target weight and radius."

    def createInstance(self) -> TunedGridClusteringAlgorithm:
        return TunedGridClusteringAlgorithm()

    # -- parameters ---------------------------------------------------------

    def initAlgorithm(self, config: dict | None = None) -> None:
        self.addParameter(
            QgsProcessingParameterFeatureSource(
                self.INPUT,
                "Input layer (points or polygons)",
                [QgsProcessing.TypeVectorPoint, QgsProcessing.TypeVectorPolygon],
            )
        )
        self.addParameter(
            QgsProcessingParameterField(
                self.WEIGHT_FIELD,
                "Weight field (empty: every feature weighs 1)",
                parentLayerParameterName=self.INPUT,
                type=QgsProcessingParameterField.Numeric,
                optional=True,
            )
        )
        self.addParameter(
            QgsProcessingParameterField(
                self.PARTITION_FIELD,
                "Partition field (strata: clusters never cross them)",
                parentLayerParameterName=self.INPUT,
                optional=True,
            )
        )
        self._add_target_parameters()
        self._add_per_partition_fields(self.INPUT, "input")
        self._add_advanced_parameters()
        self.addParameter(
            QgsProcessingParameterFeatureSink(
                self.OUTPUT, "Units with clusters", QgsProcessing.TypeVectorAnyGeometry
            )
        )
        self._add_cluster_outputs()

    # -- run ----------------------------------------------------------------

    def processAlgorithm(
        self, parameters: dict, context: QgsProcessingContext, feedback: QgsProcessingFeedback
    ) -> dict[str, Any]:
        settings = self._checked_settings(parameters, context)
        source = self.parameterAsSource(parameters, self.INPUT, context)
        if source is None:
            raise QgsProcessingException(self.invalidSourceError(parameters, self.INPUT))
        weight_field = self.parameterAsString(parameters, self.WEIGHT_FIELD, context) or None
        partition_field = self.parameterAsString(parameters, self.PARTITION_FIELD, context) or None
        target_fields = self._per_partition_fields(parameters, context)
        if target_fields and not partition_field:
            raise QgsProcessingException(
                f"Per-partition targets ({', '.join(target_fields)}) need partitions: set "
                "PARTITION_FIELD, or leave the per-partition fields empty."
            )
        requested_crs = self.parameterAsCrs(parameters, self.DISTANCE_CRS, context)

        extra_fields = list(dict.fromkeys([partition_field, *target_fields.values()]))
        units = common.read_units(
            source,
            weight_field,
            feedback,
            extra_fields=extra_fields if partition_field else (),
            progress_span=(0.0, 6.0),
            collect_rectangles=True,
            keep_features=True,
        )
        metric_crs = choose_metric_crs(
            units.crs, units.xy, requested_crs, context.transformContext(), feedback
        )
        xy_metric = to_metric(
            units.xy, units.crs, metric_crs, context.transformContext(), units.feature_ids
        )
        grid = unit_grid(units)
        units.rectangle_boxes = None  # only needed to find the grid

        partitions = None
        per_partition_params = None
        if partition_field:
            partitions = common.unit_partitions(
                units.extra[partition_field], partition_field, units.feature_ids
            )
            targets = common.unit_partition_targets(
                partitions,
                {name: (field, units.extra[field]) for name, field in target_fields.items()},
            )
            present = common.present_partitions(partitions)
            per_partition_params = common.partition_parameters(present, targets, settings)
            n_partitions = len(present)
            feedback.pushInfo(
                f"{n_partitions} partitions from '{partition_field}'"
                + (f"; {len(targets)} with their own targets." if target_fields else ".")
            )

        neighbours = None
        # The grid's neighbours are cheap: also computed without refinement, for the checks.
        if settings.refines or grid is not None:
            neighbours = common.unit_neighbours(
                source, units, xy_metric, grid, settings.neighbour_distance, feedback
            )
            feedback.pushInfo(f"Neighbours: {neighbours.description}.")
        common.release_freed_memory()  # reading and the neighbour graph left garbage
        feedback.setProgress(10)

        # Core sees grid units in reading order, whatever the order of the file.
        order = None if grid is None else grid_order(grid)
        # Permuted once; the layer-order copies are dropped (weights serve only here).
        xy_metric, weights, partitions = common.in_order(
            order, xy_metric, units.weights, partitions
        )
        units.weights = None
        run = common.run_clustering(
            xy_metric,
            weights,
            partitions,
            settings,
            feedback,
            per_partition_params=per_partition_params,
            adjacency=None if neighbours is None else neighbours.matrix,
            order=order,
            progress_span=(10.0, 88.0),
        )
        del weights, order
        feedback.pushInfo(f"{run.result.n_clusters} clusters (best k in pass 1: {run.best_k}).")
        # Memory grows with the output from here: drop what only clustering needed.
        neighbour_text = (
            neighbours.description
            if neighbours is not None
            else "not used (no contiguity, minimum weight or maximum radius)"
        )
        del neighbours, xy_metric
        common.release_freed_memory()

        dest_id, written = common.write_units_with_clusters(
            self,
            parameters,
            self.OUTPUT,
            context,
            feedback,
            source,
            units,
            run.assignment,
            collect_geometries=grid is None,
        )
        try:  # the OUTPUT file is closed meanwhile (BackgroundSink)
            polygons, method = cluster_polygons(
                units, run.assignment.codes, run.assignment.n_clusters, written, grid=grid
            )
            feedback.pushInfo(f"Cluster polygons: {method}.")

            # Keyed by the parameter names users see; the report finds its
            # targets by these names, case-insensitively.
            report_parameters = {
                self.INPUT: f"{source.sourceName()} ({units.n} features)",
                self.WEIGHT_FIELD: weight_field or "(none: every feature weighs 1)",
                self.PARTITION_FIELD: partition_field or "(none)",
                **target_fields,
                **settings.report_items(),
                "Neighbours": neighbour_text,
                self.DISTANCE_CRS: f"{metric_crs.authid()} {metric_crs.description()}",
                "Cluster polygons": method,
            }
            notes = [
                f"Input field '{old}' renamed to '{new}' in OUTPUT."
                for old, new in written.renamed_fields
            ]
            return self._write_cluster_outputs(
                parameters,
                context,
                feedback,
                run,
                polygons,
                units.crs,
                dest_id,
                report_parameters,
                notes,
                written.closing,
            )
        finally:
            if written.closing is not None:
                written.closing.wait()
