"""Processing algorithm ``gridsampling:tunedgridclustering``: a thin adapter over core.

Reading, projecting, writing, styling and reporting live in :mod:`.common`;
the clustering itself in ``core.tuned`` (imported lazily, so the plugin
loads and explains itself when scikit-learn or optuna is missing).
"""

from __future__ import annotations

import re
from typing import Any

from qgis.core import (
    QgsProcessing,
    QgsProcessingAlgorithm,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingOutputNumber,
    QgsProcessingParameterCrs,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterFeatureSink,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterField,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterNumber,
)
from qgis.PyQt.QtGui import QIcon

from ..processing_provider.provider import ICON_PATH
from . import common

_HELP_SOURCE = """<p>Groups weighted units (grid points, grid cells, building footprints…) into
compact clusters of about a target weight and radius, e.g. primary sampling units (PSUs)
for a household survey. A weighted k-means is run for many numbers of clusters k around
total weight / target weight; an Optuna search keeps the k whose clusters score best:
<code>score = importance × (target radius / target weight) × |target weight − median
weight| + |target radius − median radius|</code> (radius = radius of the smallest circle
enclosing a cluster's units). With a maximum weight, extra passes split every heavier
cluster again.</p>
<h3>Parameters</h3>
<ul>
<li><b>Input layer</b> (INPUT): points or (multi)polygons; "Selected features only" is
honoured. A polygon is clustered by its <i>point on surface</i> (a point always inside
it, even when concave); an invalid polygon for which that fails uses its centroid.
Features are never dropped, invalid geometries included; null or empty geometries are
refused (run "Remove null geometries").</li>
<li><b>Weight field</b> (WEIGHT_FIELD, optional): numeric, e.g. population. Without it
every feature weighs 1. NULL or negative weights are refused.</li>
<li><b>Target cluster weight</b> (TARGET_WEIGHT): weight one cluster should reach.</li>
<li><b>Target cluster radius</b> (TARGET_RADIUS): in metres.</li>
<li><b>Weight importance</b> (WEIGHT_IMPORTANCE): how much the weight term counts
against the radius term in the score (1 = equal).</li>
<li><b>Maximum cluster weight</b> (MAX_WEIGHT, optional): clusters heavier than this
are clustered again in extra passes (at least the target weight).</li>
<li><b>Maximum passes</b> (MAX_PASSES): limit on passes, counting the first; only
used when a maximum weight is set. Passes also stop when no cluster is too heavy or their count
stays the same for 3 passes.</li>
<li><b>Trials in the first pass / in later passes</b> (INITIAL_TRIALS,
SUBSEQUENT_TRIALS, advanced): values of k tried per search.</li>
<li><b>Distance CRS</b> (DISTANCE_CRS, advanced, optional): projected CRS in metres in
which distances are measured. Default: the layer CRS if it is projected in metres,
otherwise the WGS 84 UTM zone of the centre of the data.</li>
<li><b>Random seed</b> (SEED, advanced): same seed, same clusters.</li>
<li><b>Threads</b> (N_JOBS, advanced): threads for the trials; results do not
depend on it.</li>
</ul>
<h3>Outputs</h3>
<ul>
<li><b>Units with clusters</b> (OUTPUT): every input feature, geometry and attributes
unchanged, plus <code>cluster_id</code> (e.g. CLUSTER_001, or CLUSTER_001_02 when split
in pass 2), <code>cluster_weight</code>, <code>cluster_radius_m</code> and
<code>cluster_pass</code>. An input field with one of these names (any case) is kept
under the name <code>&lt;name&gt;_input</code>.</li>
<li><b>Clusters</b> (OUTPUT_CLUSTERS): one (multi)polygon per cluster with
<code>cluster_id, weight, radius_m, n_units, area_km2, pass</code>. Polygon input: the
dissolve of the member polygons. Point input on a regular grid (spacing inferred from the
coordinates in the layer CRS): the union of the members' grid cells. Other points: the
convex hull of the members (buffered by 1 m when it is only a point or a line).
area_km2 is ellipsoidal.</li>
<li><b>Report</b> (OUTPUT_REPORT, optional): HTML page with the parameters, the trials
and the weight and radius distributions, shown in the Results Viewer.</li>
<li>N_CLUSTERS and BEST_K: number of clusters and the k chosen in the first pass.</li>
</ul>
<p>Loaded outputs are coloured by cluster_id. Needs the Python packages scikit-learn and
optuna.</p>
"""
# Processing's help panel turns line breaks into paragraph breaks: keep one line.
HELP = re.sub(r"\s*\n\s*", " ", _HELP_SOURCE).strip()


class TunedGridClusteringAlgorithm(QgsProcessingAlgorithm):
    """Cluster weighted points or polygons into units of a target weight and radius."""

    INPUT = "INPUT"
    WEIGHT_FIELD = "WEIGHT_FIELD"
    TARGET_WEIGHT = "TARGET_WEIGHT"
    TARGET_RADIUS = "TARGET_RADIUS"
    WEIGHT_IMPORTANCE = "WEIGHT_IMPORTANCE"
    MAX_WEIGHT = "MAX_WEIGHT"
    MAX_PASSES = "MAX_PASSES"
    INITIAL_TRIALS = "INITIAL_TRIALS"
    SUBSEQUENT_TRIALS = "SUBSEQUENT_TRIALS"
    DISTANCE_CRS = "DISTANCE_CRS"
    SEED = "SEED"
    N_JOBS = "N_JOBS"
    OUTPUT = "OUTPUT"
    OUTPUT_CLUSTERS = "OUTPUT_CLUSTERS"
    OUTPUT_REPORT = "OUTPUT_REPORT"
    N_CLUSTERS = "N_CLUSTERS"
    BEST_K = "BEST_K"

    def __init__(self) -> None:
        super().__init__()
        # Keeps layer post-processors alive until QGIS runs them (main thread).
        self._post_processors: list = []

    # -- identity -----------------------------------------------------------

    def name(self) -> str:
        return "tunedgridclustering"

    def displayName(self) -> str:
        return "Tuned Grid Clustering"

    def group(self) -> str:
        return "Clustering"

    def groupId(self) -> str:
        return "clustering"

    def shortHelpString(self) -> str:
        return HELP

    def shortDescription(self) -> str:
        return "Cluster weighted points or polygons into survey PSUs of a target weight and radius."

    def tags(self) -> list[str]:
        return ["cluster", "psu", "survey", "sampling", "kmeans", "grid", "population", "optuna"]

    def icon(self) -> QIcon:
        return QIcon(str(ICON_PATH))

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
            QgsProcessingParameterNumber(
                self.TARGET_WEIGHT,
                "Target cluster weight",
                QgsProcessingParameterNumber.Double,
                defaultValue=240.0,
                minValue=0.0,
            )
        )
        self.addParameter(
            QgsProcessingParameterNumber(
                self.TARGET_RADIUS,
                "Target cluster radius (metres)",
                QgsProcessingParameterNumber.Double,
                defaultValue=1000.0,
                minValue=0.0,
            )
        )
        self.addParameter(
            QgsProcessingParameterNumber(
                self.WEIGHT_IMPORTANCE,
                "Weight importance (vs radius)",
                QgsProcessingParameterNumber.Double,
                defaultValue=1.0,
                minValue=0.0,
            )
        )
        self.addParameter(
            QgsProcessingParameterNumber(
                self.MAX_WEIGHT,
                "Maximum cluster weight (empty: no extra passes)",
                QgsProcessingParameterNumber.Double,
                optional=True,
                minValue=0.0,
            )
        )
        self.addParameter(
            QgsProcessingParameterNumber(
                self.MAX_PASSES,
                "Maximum passes (with a maximum weight)",
                QgsProcessingParameterNumber.Integer,
                defaultValue=10,
                minValue=1,
            )
        )
        advanced = [
            QgsProcessingParameterNumber(
                self.INITIAL_TRIALS,
                "Trials in the first pass",
                QgsProcessingParameterNumber.Integer,
                defaultValue=100,
                minValue=1,
            ),
            QgsProcessingParameterNumber(
                self.SUBSEQUENT_TRIALS,
                "Trials per cluster split in later passes",
                QgsProcessingParameterNumber.Integer,
                defaultValue=20,
                minValue=1,
            ),
            QgsProcessingParameterCrs(
                self.DISTANCE_CRS,
                "Distance CRS, in metres (empty: layer CRS if metric, else UTM zone)",
                optional=True,
            ),
            QgsProcessingParameterNumber(
                self.SEED,
                "Random seed",
                QgsProcessingParameterNumber.Integer,
                defaultValue=42,
                minValue=0,
            ),
            QgsProcessingParameterNumber(
                self.N_JOBS,
                "Threads",
                QgsProcessingParameterNumber.Integer,
                defaultValue=1,
                minValue=1,
            ),
        ]
        for name, decimals in (
            (self.TARGET_WEIGHT, 2),
            (self.TARGET_RADIUS, 0),
            (self.WEIGHT_IMPORTANCE, 2),
            (self.MAX_WEIGHT, 2),
        ):
            self.parameterDefinition(name).setMetadata({"widget_wrapper": {"decimals": decimals}})
        for parameter in advanced:
            parameter.setFlags(parameter.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
            self.addParameter(parameter)
        self.addParameter(
            QgsProcessingParameterFeatureSink(
                self.OUTPUT, "Units with clusters", QgsProcessing.TypeVectorAnyGeometry
            )
        )
        self.addParameter(
            QgsProcessingParameterFeatureSink(
                self.OUTPUT_CLUSTERS, "Clusters", QgsProcessing.TypeVectorPolygon
            )
        )
        # An .html file destination also adds a QgsProcessingOutputHtml output,
        # so the report opens in the Results Viewer.
        self.addParameter(
            QgsProcessingParameterFileDestination(
                self.OUTPUT_REPORT,
                "Report",
                "HTML files (*.html)",
                optional=True,
                createByDefault=True,
            )
        )
        self.addOutput(QgsProcessingOutputNumber(self.N_CLUSTERS, "Number of clusters"))
        self.addOutput(QgsProcessingOutputNumber(self.BEST_K, "k chosen in the first pass"))

    # -- checks -------------------------------------------------------------

    def canExecute(self) -> tuple[bool, str]:
        problem = common.dependencies_problem()
        return (False, problem) if problem else (True, "")

    def checkParameterValues(self, parameters: dict, context: QgsProcessingContext):
        problem = self._check_targets(parameters, context)
        if problem:
            return False, problem
        return super().checkParameterValues(parameters, context)

    def _check_targets(self, parameters: dict, context: QgsProcessingContext) -> str | None:
        max_weight = common.optional_number(parameters, self.MAX_WEIGHT)
        return common.check_targets(
            self.parameterAsDouble(parameters, self.TARGET_WEIGHT, context),
            self.parameterAsDouble(parameters, self.TARGET_RADIUS, context),
            None
            if max_weight is None
            else self.parameterAsDouble(parameters, self.MAX_WEIGHT, context),
        )

    # -- run ----------------------------------------------------------------

    def processAlgorithm(
        self, parameters: dict, context: QgsProcessingContext, feedback: QgsProcessingFeedback
    ) -> dict[str, Any]:
        common.require_dependencies()
        problem = self._check_targets(parameters, context)
        if problem:
            raise QgsProcessingException(problem)

        source = self.parameterAsSource(parameters, self.INPUT, context)
        if source is None:
            raise QgsProcessingException(self.invalidSourceError(parameters, self.INPUT))
        weight_field = self.parameterAsString(parameters, self.WEIGHT_FIELD, context) or None
        target_weight = self.parameterAsDouble(parameters, self.TARGET_WEIGHT, context)
        target_radius = self.parameterAsDouble(parameters, self.TARGET_RADIUS, context)
        max_weight = common.optional_number(parameters, self.MAX_WEIGHT)
        if max_weight is not None:
            max_weight = self.parameterAsDouble(parameters, self.MAX_WEIGHT, context)
        requested_crs = self.parameterAsCrs(parameters, self.DISTANCE_CRS, context)

        units = common.read_units(source, weight_field, feedback, progress_span=(0.0, 8.0))
        metric_crs = common.choose_metric_crs(
            units.crs, units.xy, requested_crs, context.transformContext(), feedback
        )
        xy_metric = common.to_metric(
            units.xy, units.crs, metric_crs, context.transformContext(), units.feature_ids
        )
        # As the user set them (parameter names), for core and the report.
        settings = {
            self.TARGET_WEIGHT: target_weight,
            self.TARGET_RADIUS: target_radius,
            self.WEIGHT_IMPORTANCE: self.parameterAsDouble(
                parameters, self.WEIGHT_IMPORTANCE, context
            ),
            self.MAX_WEIGHT: max_weight,
            # Extra passes only make sense with a maximum weight to split at.
            self.MAX_PASSES: (
                self.parameterAsInt(parameters, self.MAX_PASSES, context)
                if max_weight is not None
                else 1
            ),
            self.INITIAL_TRIALS: self.parameterAsInt(parameters, self.INITIAL_TRIALS, context),
            self.SUBSEQUENT_TRIALS: self.parameterAsInt(
                parameters, self.SUBSEQUENT_TRIALS, context
            ),
            self.SEED: self.parameterAsInt(parameters, self.SEED, context),
            self.N_JOBS: self.parameterAsInt(parameters, self.N_JOBS, context),
        }
        from ..core import TunedClustering

        with common.core_errors_as_processing_exceptions():
            estimator = TunedClustering(
                desired_cluster_weight=settings[self.TARGET_WEIGHT],
                desired_cluster_radius=settings[self.TARGET_RADIUS],
                weight_importance_factor=settings[self.WEIGHT_IMPORTANCE],
                max_cluster_weight=settings[self.MAX_WEIGHT],
                max_passes=settings[self.MAX_PASSES],
                initial_max_trials=settings[self.INITIAL_TRIALS],
                subsequent_max_trials=settings[self.SUBSEQUENT_TRIALS],
                n_jobs=settings[self.N_JOBS],
                random_state=settings[self.SEED],
            )
            progress = common.CoreProgress(feedback, (8.0, 90.0))
            result = estimator.fit(
                xy_metric, units.weights, progress=progress, is_cancelled=progress.is_cancelled
            )
        feedback.pushInfo(f"{result.n_clusters} clusters (best k in pass 1: {result.best_k}).")

        assignment = common.ClusterAssignment.from_result(result)
        dest_id, written = common.write_units_with_clusters(
            self, parameters, self.OUTPUT, context, feedback, source, units, assignment
        )
        polygons, method = common.cluster_polygons(
            units, assignment.codes, assignment.n_clusters, written
        )
        feedback.pushInfo(f"Cluster polygons: {method}.")
        clusters_dest_id = common.write_cluster_polygons(
            self, parameters, self.OUTPUT_CLUSTERS, context, polygons, assignment, units.crs
        )
        feedback.setProgress(98)

        common.style_output_on_load(self._post_processors, context, dest_id)
        common.style_output_on_load(
            self._post_processors, context, clusters_dest_id, "cluster_id", fill_opacity=0.35
        )

        results: dict[str, Any] = {
            self.OUTPUT: dest_id,
            self.OUTPUT_CLUSTERS: clusters_dest_id,
            self.N_CLUSTERS: int(result.n_clusters),
            self.BEST_K: int(result.best_k),
        }
        report_path = self.parameterAsFileOutput(parameters, self.OUTPUT_REPORT, context)
        if report_path:
            # Keyed by the parameter names users see; the report finds its
            # targets by these names, case-insensitively.
            report_parameters = {
                self.INPUT: f"{source.sourceName()} ({units.n} features)",
                self.WEIGHT_FIELD: weight_field or "(none: every feature weighs 1)",
                **settings,
                self.DISTANCE_CRS: f"{metric_crs.authid()} {metric_crs.description()}",
                "Cluster polygons": method,
            }
            notes = [
                f"Input field '{old}' renamed to '{new}' in OUTPUT."
                for old, new in written.renamed_fields
            ]
            common.write_report(
                report_path,
                result,
                report_parameters,
                title="Tuned Grid Clustering report",
                notes=notes or None,
            )
            results[self.OUTPUT_REPORT] = report_path
        feedback.setProgress(100)
        return results
