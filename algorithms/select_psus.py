"""Processing algorithm ``gridsampling:selectpsus``: stratified PPS selection of PSUs.

A thin adapter: it reads the cluster layer, hands sizes, strata and centroids
to :class:`tuned_grid_clustering.core.selection.PsuSelector`, and writes the
selected PSUs, the whole frame with inclusion probabilities, and an HTML
report. Everything computed lives in ``core/selection.py``.
"""

from __future__ import annotations

import math

from qgis.core import (
    QgsFeature,
    QgsFeatureSink,
    QgsField,
    QgsFields,
    QgsProcessing,
    QgsProcessingAlgorithm,
    QgsProcessingException,
    QgsProcessingOutputNumber,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFeatureSink,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterField,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterNumber,
)
from qgis.PyQt.QtCore import QVariant

from ..core import dependencies

# Enum order of METHOD -> core method name.
METHOD_KEYS = ("systematic", "srs", "sampford")
METHOD_OPTIONS = ("Systematic PPS", "Simple random sampling", "PPS Sampford")

# Fields appended to the input attributes, in this order.
ADDED_FIELDS = (
    ("stratum", QVariant.String),
    ("pi", QVariant.Double),
    ("design_weight", QVariant.Double),
    ("certainty", QVariant.Int),
    ("selected", QVariant.Int),
    ("replacement", QVariant.Int),
    ("selection_order", QVariant.Int),
)


class SelectPsusAlgorithm(QgsProcessingAlgorithm):
    """Select PSUs by stratified systematic PPS, SRS or Sampford's PPS."""

    INPUT = "INPUT"
    SIZE_FIELD = "SIZE_FIELD"
    STRATUM_FIELD = "STRATUM_FIELD"
    SAMPLE_SIZE = "SAMPLE_SIZE"
    SAMPLE_SIZE_FIELD = "SAMPLE_SIZE_FIELD"
    SAMPLE_SIZE_TABLE = "SAMPLE_SIZE_TABLE"
    SAMPLE_SIZE_TABLE_STRATUM_FIELD = "SAMPLE_SIZE_TABLE_STRATUM_FIELD"
    SAMPLE_SIZE_TABLE_SIZE_FIELD = "SAMPLE_SIZE_TABLE_SIZE_FIELD"
    METHOD = "METHOD"
    N_REPLACEMENTS = "N_REPLACEMENTS"
    SEED = "SEED"
    OUTPUT = "OUTPUT"
    OUTPUT_FRAME = "OUTPUT_FRAME"
    OUTPUT_REPORT = "OUTPUT_REPORT"
    N_SELECTED = "N_SELECTED"
    N_REPLACEMENTS_SELECTED = "N_REPLACEMENTS_SELECTED"
    N_STRATA = "N_STRATA"
    N_FRAME = "N_FRAME"
    SEED_USED = "SEED_USED"

    # -- identity -------------------------------------------------------------

    def createInstance(self):
        return SelectPsusAlgorithm()

    def name(self) -> str:
        return "selectpsus"

    def displayName(self) -> str:
        return "Select PSUs (PPS)"

    def group(self) -> str:
        return "Sampling"

    def groupId(self) -> str:
        return "sampling"

    def tags(self) -> list[str]:
        return [
            "pps",
            "sampling",
            "survey",
            "psu",
            "cluster",
            "systematic",
            "sampford",
            "stratified",
            "inclusion probability",
            "design weight",
            "certainty",
        ]

    def shortHelpString(self) -> str:
        return (
            "Selects primary sampling units (PSUs) from a cluster layer, stratum by stratum, "
            "and records the exact probability that each cluster enters the sample.\n\n"
            "<b>Methods</b>\n"
            "- <i>Systematic PPS</i> (default): probability proportional to size, drawn "
            "systematically with a random start along a geographic serpentine order of the "
            "cluster centroids (bands over y, alternating east/west), which spreads the sample "
            "over the stratum (implicit stratification).\n"
            "- <i>Simple random sampling</i>: equal probabilities pi = n / N; no size needed.\n"
            "- <i>PPS Sampford</i>: the same probabilities as systematic PPS, but every pair of "
            "clusters has a positive joint probability (needed by some variance estimators); "
            "drawn exactly by a seeded rejective procedure.\n\n"
            "<b>Inclusion probability pi</b>: pi = n x size / total size of the stratum. A "
            "cluster whose size reaches the sampling interval (total / n) is a "
            "<i>certainty</i> unit: it is taken with pi = 1, and the interval is recomputed on "
            "the others with the remaining sample size, repeatedly (removing big clusters can "
            "make others certain). In every stratum pi adds up to n.\n"
            "<b>Design weight</b> = 1 / pi.\n\n"
            "<b>Sample sizes</b>: one number for every stratum, or a numeric field of the "
            "cluster layer holding the stratum's n (same value on all its clusters), or a "
            "table (any layer) with a stratum column and a size column. Stratum values are "
            "matched as text (1 and 1.0 match; leading/trailing spaces matter).\n\n"
            "<b>Replacements</b>: optionally r replacement PSUs per stratum, drawn with the "
            "same method among the clusters not in the main sample and put in random order "
            "(replacement = 1 is used first). Their pi and design weight are their "
            "main-sample values; using a replacement changes the design, so record every "
            "substitution and treat it as non-response in the weighting.\n\n"
            "<b>Outputs</b>: the selected PSUs (main sample and replacements) with all input "
            "attributes plus stratum, pi, design_weight, certainty, selected (1 = main "
            "sample), replacement (0 = main sample, 1..r = replacement rank) and "
            "selection_order; the whole frame with the same fields (empty where a cluster was "
            "not drawn); and an HTML report per stratum (clusters, n, total size, interval, "
            "certainty units, sum of pi). Input fields with these names are replaced.\n\n"
            "Leave the seed empty to draw one at random: it is reported (SEED_USED and in the "
            "report), so every sample can be reproduced."
        )

    # -- parameters -----------------------------------------------------------

    def initAlgorithm(self, config=None) -> None:
        self.addParameter(
            QgsProcessingParameterFeatureSource(
                self.INPUT,
                "Clusters (sampling frame)",
                [QgsProcessing.TypeVectorPolygon, QgsProcessing.TypeVectorPoint],
            )
        )
        self.addParameter(
            QgsProcessingParameterField(
                self.SIZE_FIELD,
                "Measure of size (e.g. population; not needed for simple random sampling)",
                parentLayerParameterName=self.INPUT,
                type=QgsProcessingParameterField.Numeric,
                optional=True,
            )
        )
        self.addParameter(
            QgsProcessingParameterField(
                self.STRATUM_FIELD,
                "Stratum field",
                parentLayerParameterName=self.INPUT,
                type=QgsProcessingParameterField.Any,
                optional=True,
            )
        )
        self.addParameter(
            QgsProcessingParameterNumber(
                self.SAMPLE_SIZE,
                "PSUs per stratum",
                type=QgsProcessingParameterNumber.Integer,
                defaultValue=10,
                minValue=1,
            )
        )
        self.addParameter(
            QgsProcessingParameterField(
                self.SAMPLE_SIZE_FIELD,
                "PSUs per stratum from field (same value on every cluster of a stratum)",
                parentLayerParameterName=self.INPUT,
                type=QgsProcessingParameterField.Numeric,
                optional=True,
            )
        )
        self.addParameter(
            QgsProcessingParameterFeatureSource(
                self.SAMPLE_SIZE_TABLE,
                "PSUs per stratum from table",
                [QgsProcessing.TypeVector],
                optional=True,
            )
        )
        self.addParameter(
            QgsProcessingParameterField(
                self.SAMPLE_SIZE_TABLE_STRATUM_FIELD,
                "Table: stratum field",
                parentLayerParameterName=self.SAMPLE_SIZE_TABLE,
                type=QgsProcessingParameterField.Any,
                optional=True,
            )
        )
        self.addParameter(
            QgsProcessingParameterField(
                self.SAMPLE_SIZE_TABLE_SIZE_FIELD,
                "Table: PSUs field",
                parentLayerParameterName=self.SAMPLE_SIZE_TABLE,
                type=QgsProcessingParameterField.Numeric,
                optional=True,
            )
        )
        self.addParameter(
            QgsProcessingParameterEnum(
                self.METHOD, "Selection method", options=list(METHOD_OPTIONS), defaultValue=0
            )
        )
        self.addParameter(
            QgsProcessingParameterNumber(
                self.N_REPLACEMENTS,
                "Replacement PSUs per stratum",
                type=QgsProcessingParameterNumber.Integer,
                defaultValue=0,
                minValue=0,
            )
        )
        self.addParameter(
            QgsProcessingParameterNumber(
                self.SEED,
                "Random seed (empty: drawn at random and reported)",
                type=QgsProcessingParameterNumber.Integer,
                minValue=0,
                optional=True,
            )
        )
        self.addParameter(QgsProcessingParameterFeatureSink(self.OUTPUT, "Selected PSUs"))
        self.addParameter(
            QgsProcessingParameterFeatureSink(
                self.OUTPUT_FRAME, "Sampling frame with inclusion probabilities"
            )
        )
        self.addParameter(
            QgsProcessingParameterFileDestination(
                self.OUTPUT_REPORT,
                "Selection report",
                fileFilter="HTML files (*.html *.htm)",
                optional=True,
                createByDefault=True,
            )
        )
        self.addOutput(QgsProcessingOutputNumber(self.N_SELECTED, "PSUs in the main sample"))
        self.addOutput(QgsProcessingOutputNumber(self.N_REPLACEMENTS_SELECTED, "Replacement PSUs"))
        self.addOutput(QgsProcessingOutputNumber(self.N_STRATA, "Strata"))
        self.addOutput(QgsProcessingOutputNumber(self.N_FRAME, "Clusters in the frame"))
        self.addOutput(QgsProcessingOutputNumber(self.SEED_USED, "Random seed used"))

    def canExecute(self):
        missing = dependencies.missing_packages()
        if missing:
            return False, dependencies.install_instructions(missing)
        return True, ""

    # -- run --------------------------------------------------------------------

    def processAlgorithm(self, parameters, context, feedback):
        missing = dependencies.missing_packages()
        if missing:
            raise QgsProcessingException(dependencies.install_instructions(missing))
        import numpy as np

        from ..core.errors import ClusteringInputError
        from ..core.selection import PsuSelector, selection_report_html

        source = self.parameterAsSource(parameters, self.INPUT, context)
        if source is None:
            raise QgsProcessingException(self.invalidSourceError(parameters, self.INPUT))
        size_field = self.parameterAsString(parameters, self.SIZE_FIELD, context)
        stratum_field = self.parameterAsString(parameters, self.STRATUM_FIELD, context)
        size_column_field = self.parameterAsString(parameters, self.SAMPLE_SIZE_FIELD, context)
        method = METHOD_KEYS[self.parameterAsEnum(parameters, self.METHOD, context)]
        n_replacements = self.parameterAsInt(parameters, self.N_REPLACEMENTS, context)
        seed = None
        if parameters.get(self.SEED) not in (None, ""):
            seed = self.parameterAsInt(parameters, self.SEED, context)
        if not size_field and method != "srs":
            raise QgsProcessingException(
                f"{METHOD_OPTIONS[METHOD_KEYS.index(method)]} needs a measure of size: choose "
                "the size field (e.g. the cluster population), or choose simple random sampling."
            )

        # Read the frame once; features are kept to write both outputs.
        fields = source.fields()
        field_index = {
            name: fields.lookupField(name)
            for name in (size_field, stratum_field, size_column_field)
            if name
        }
        features, sizes, strata, size_column, xs, ys = [], [], [], [], [], []
        total = source.featureCount() or 1
        for i, feature in enumerate(source.getFeatures()):
            if feedback.isCanceled():
                return {}
            features.append(feature)
            attributes = feature.attributes()
            if size_field:
                sizes.append(_as_float(attributes[field_index[size_field]]))
            if stratum_field:
                strata.append(_as_python(attributes[field_index[stratum_field]]))
            if size_column_field:
                size_column.append(_as_python(attributes[field_index[size_column_field]]))
            x, y = _centroid(feature)
            xs.append(x)
            ys.append(y)
            feedback.setProgress(40.0 * (i + 1) / total)
        if not features:
            raise QgsProcessingException(
                "The cluster layer has no features. Select PSUs from a layer that has clusters."
            )
        unlocated = sum(1 for x in xs if math.isnan(x))
        if unlocated:
            feedback.pushWarning(
                f"{unlocated} cluster(s) have no geometry; they are placed last in the "
                "serpentine order of their stratum."
            )

        try:
            strata_keys = _stratum_keys(strata) if stratum_field else None
            sample_size = self._sample_size(
                parameters, context, strata_keys, size_column_field, size_column
            )
            result = PsuSelector(
                sample_size, method=method, n_replacements=n_replacements, random_state=seed
            ).fit(
                np.asarray(sizes, dtype=float) if size_field else None,
                strata=strata_keys,
                x=np.asarray(xs),
                y=np.asarray(ys),
            )
        except ClusteringInputError as error:
            raise QgsProcessingException(str(error)) from None
        feedback.setProgress(50)
        for record in result.summary.itertuples(index=False):
            feedback.pushInfo(
                f"Stratum {record.stratum}: {record.n_units} clusters, n = {record.sample_size}, "
                f"{record.n_certainty} certainty unit(s), sum of pi = {record.sum_pi:.6f}"
                + (f", {record.n_replacements} replacement(s)" if record.n_replacements else "")
            )

        # Output fields: input fields (minus the names we add) + ours.
        added_names = {name.lower() for name, _ in ADDED_FIELDS}
        kept = [i for i, f in enumerate(fields) if f.name().lower() not in added_names]
        replaced = [fields.at(i).name() for i in range(fields.count()) if i not in set(kept)]
        if replaced:
            feedback.pushWarning(
                f"Input field(s) {', '.join(replaced)} are replaced by this algorithm's fields."
            )
        out_fields = QgsFields()
        for i in kept:
            out_fields.append(fields.at(i))
        for name, kind in ADDED_FIELDS:
            out_fields.append(QgsField(name, kind))

        sink, sink_id = self.parameterAsSink(
            parameters, self.OUTPUT, context, out_fields, source.wkbType(), source.sourceCrs()
        )
        if sink is None:
            raise QgsProcessingException(self.invalidSinkError(parameters, self.OUTPUT))
        frame_sink, frame_id = self.parameterAsSink(
            parameters,
            self.OUTPUT_FRAME,
            context,
            out_fields,
            source.wkbType(),
            source.sourceCrs(),
        )
        if frame_sink is None:
            raise QgsProcessingException(self.invalidSinkError(parameters, self.OUTPUT_FRAME))

        labels = result.strata
        weights = result.design_weight

        def make_feature(i: int) -> QgsFeature:
            attributes = [features[i].attributes()[j] for j in kept]
            drawn = result.replacement[i] >= 0
            attributes += [
                str(labels[i]),
                float(result.pi[i]),
                None if math.isnan(weights[i]) else float(weights[i]),
                int(result.certainty[i]),
                int(result.selected[i]),
                int(result.replacement[i]) if drawn else None,
                int(result.selection_order[i]) if drawn else None,
            ]
            out = QgsFeature(out_fields)
            out.setGeometry(features[i].geometry())
            out.setAttributes(attributes)
            return out

        # Selected PSUs grouped by stratum, in selection order.
        stratum_rank = {label: r for r, label in enumerate(result.summary.stratum)}
        chosen = [i for i in range(len(features)) if result.replacement[i] >= 0]
        chosen.sort(key=lambda i: (stratum_rank[labels[i]], result.selection_order[i]))
        steps = len(chosen) + len(features)
        for done, i in enumerate(chosen):
            if feedback.isCanceled():
                return {}
            if not sink.addFeature(make_feature(i), QgsFeatureSink.FastInsert):
                raise QgsProcessingException(self.writeFeatureError(sink, parameters, self.OUTPUT))
            feedback.setProgress(50 + 50.0 * (done + 1) / steps)
        for i in range(len(features)):
            if feedback.isCanceled():
                return {}
            if not frame_sink.addFeature(make_feature(i), QgsFeatureSink.FastInsert):
                raise QgsProcessingException(
                    self.writeFeatureError(frame_sink, parameters, self.OUTPUT_FRAME)
                )
            feedback.setProgress(50 + 50.0 * (len(chosen) + i + 1) / steps)

        report_path = self.parameterAsFileOutput(parameters, self.OUTPUT_REPORT, context)
        if report_path:
            title = f"PSU selection: {source.sourceName()}"
            with open(report_path, "w", encoding="utf-8") as handle:
                handle.write(selection_report_html(result, title=title))

        return {
            self.OUTPUT: sink_id,
            self.OUTPUT_FRAME: frame_id,
            self.OUTPUT_REPORT: report_path or None,
            self.N_SELECTED: result.n_selected,
            self.N_REPLACEMENTS_SELECTED: result.n_replacements_selected,
            self.N_STRATA: len(result.stratum_summaries),
            self.N_FRAME: len(features),
            self.SEED_USED: result.seed,
        }

    def _sample_size(self, parameters, context, strata_keys, size_column_field, size_column):
        """The core's ``sample_size``: one int, or ``{stratum: n}`` from a field or a table."""
        from ..core.selection import SINGLE_STRATUM, sample_sizes_from_column

        table = self.parameterAsSource(parameters, self.SAMPLE_SIZE_TABLE, context)
        if table is not None and size_column_field:
            raise QgsProcessingException(
                "Both a sample size field and a sample size table are set. Use only one of them."
            )
        if size_column_field:
            labels = strata_keys if strata_keys is not None else [SINGLE_STRATUM] * len(size_column)
            return sample_sizes_from_column(labels, size_column)
        if table is None:
            return self.parameterAsInt(parameters, self.SAMPLE_SIZE, context)

        if strata_keys is None:
            raise QgsProcessingException(
                "A sample size table needs strata: choose the stratum field of the clusters."
            )
        key_field = self.parameterAsString(
            parameters, self.SAMPLE_SIZE_TABLE_STRATUM_FIELD, context
        )
        value_field = self.parameterAsString(parameters, self.SAMPLE_SIZE_TABLE_SIZE_FIELD, context)
        if not key_field or not value_field:
            raise QgsProcessingException(
                "The sample size table needs its stratum field and its PSUs field: choose both."
            )
        key_index = table.fields().lookupField(key_field)
        value_index = table.fields().lookupField(value_field)
        sizes: dict = {}
        for row in table.getFeatures():
            key = _stratum_key(_as_python(row.attributes()[key_index]))
            value = _as_python(row.attributes()[value_index])
            if key is None:
                raise QgsProcessingException(
                    "A row of the sample size table has no stratum (NULL). Fill or delete it."
                )
            if value is None:
                raise QgsProcessingException(
                    f"Stratum {key!r} has no sample size (NULL) in the table. Fill it."
                )
            if key in sizes and sizes[key] != value:
                raise QgsProcessingException(
                    f"Stratum {key!r} appears twice in the sample size table with different "
                    f"sizes ({sizes[key]} and {value}). Keep one row per stratum."
                )
            sizes[key] = value
        return sizes


# -- helpers ----------------------------------------------------------------------


def _as_python(value):
    """QGIS attribute -> Python value; NULL -> None."""
    if value is None:
        return None
    if isinstance(value, QVariant):
        return None if value.isNull() else value.value()
    return value


def _as_float(value) -> float:
    value = _as_python(value)
    if value is None:
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _stratum_key(value):
    """Stratum as text; integral numbers lose their '.0' so that 1 and 1.0 match."""
    if value is None:
        return None
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if value.is_integer():
            return str(int(value))
    return str(value)


def _stratum_keys(values: list) -> list:
    return [_stratum_key(value) for value in values]


def _centroid(feature) -> tuple[float, float]:
    geometry = feature.geometry()
    if geometry is None or geometry.isNull() or geometry.isEmpty():
        return math.nan, math.nan
    point = geometry.centroid()
    if point.isNull() or point.isEmpty():
        return math.nan, math.nan
    xy = point.asPoint()
    return xy.x(), xy.y()
