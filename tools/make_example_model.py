"""Writes the example model test/qgis/data/cluster_and_select.model3: cluster, then select.

    QT_QPA_PLATFORM=offscreen /usr/bin/python3 tools/make_example_model.py OUT.model3

The model clusters a population grid into PSUs within 75-125% of the target
weight, then selects PSUs by systematic PPS. Users can open it in the
graphical modeler; test/qgis/test_two_step_workflow.py runs it.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_PATH = REPO / "test" / "qgis" / "data" / "cluster_and_select.model3"


def build_model():
    """The model, built with the plugin's algorithms registered."""
    from qgis.core import (
        QgsProcessing,
        QgsProcessingModelAlgorithm,
        QgsProcessingModelChildAlgorithm,
        QgsProcessingModelOutput,
        QgsProcessingModelParameter,
        QgsProcessingParameterFeatureSource,
        QgsProcessingParameterField,
        QgsProcessingParameterNumber,
    )
    from qgis.core import QgsProcessingModelChildParameterSource as Source
    from qgis.PyQt.QtCore import QPointF

    model = QgsProcessingModelAlgorithm("Cluster and select PSUs", "Grid sampling")
    number = QgsProcessingParameterNumber
    inputs = [
        QgsProcessingParameterFeatureSource(
            "units", "Population grid (points or cells)", [QgsProcessing.TypeVectorAnyGeometry]
        ),
        QgsProcessingParameterField(
            "weight_field",
            "Weight field",
            parentLayerParameterName="units",
            type=QgsProcessingParameterField.Numeric,
        ),
        number("target_weight", "Target PSU weight", number.Double, 240),
        number("target_radius", "Target PSU radius (metres)", number.Double, 1000),
        number("sample_size", "PSUs to select", number.Integer, 10, minValue=1),
    ]
    for row, definition in enumerate(inputs):
        component = QgsProcessingModelParameter(definition.name())
        component.setPosition(QPointF(120, 60 + 60 * row))
        model.addModelParameter(definition, component)

    def child(alg_id, child_id, title, x, sources, outputs):
        step = QgsProcessingModelChildAlgorithm(alg_id)
        step.setChildId(child_id)
        step.setDescription(title)
        step.setPosition(QPointF(x, 150))
        for name, source in sources.items():
            step.addParameterSources(name, [source])
        model_outputs = {}
        for name, (child_output, description) in outputs.items():
            output = QgsProcessingModelOutput(name, description)
            output.setChildId(child_id)
            output.setChildOutputName(child_output)
            model_outputs[name] = output
        step.setModelOutputs(model_outputs)
        model.addChildAlgorithm(step)

    child(
        "gridsampling:tunedgridclustering",
        "cluster",
        "Tuned Grid Clustering",
        420,
        {
            "INPUT": Source.fromModelParameter("units"),
            "WEIGHT_FIELD": Source.fromModelParameter("weight_field"),
            "TARGET_WEIGHT": Source.fromModelParameter("target_weight"),
            "TARGET_RADIUS": Source.fromModelParameter("target_radius"),
            "MIN_WEIGHT": Source.fromExpression("@target_weight * 0.75"),
            "MAX_WEIGHT": Source.fromExpression("@target_weight * 1.25"),
        },
        {"psus": ("OUTPUT_CLUSTERS", "PSUs (all clusters)")},
    )
    child(
        "gridsampling:selectpsus",
        "select",
        "Select PSUs (PPS)",
        720,
        {
            "INPUT": Source.fromChildOutput("cluster", "OUTPUT_CLUSTERS"),
            "SIZE_FIELD": Source.fromStaticValue("weight"),
            "SAMPLE_SIZE": Source.fromModelParameter("sample_size"),
            "METHOD": Source.fromStaticValue(0),
            "SEED": Source.fromStaticValue(2026),
        },
        {
            "sample": ("OUTPUT", "Selected PSUs"),
            "frame": ("OUTPUT_FRAME", "Sampling frame with pi"),
        },
    )
    model.setHelpContent(
        {
            "ALG_DESC": "Clusters a population grid into PSUs within 75-125% of the target "
            "weight, then selects PSUs by systematic PPS."
        }
    )
    return model


def main(path: str) -> None:
    sys.path.insert(0, "/usr/share/qgis/python/plugins")
    sys.path.insert(0, str(REPO / ".build" / "plugins"))
    from processing.core.Processing import Processing
    from qgis.core import QgsApplication

    import tuned_grid_clustering

    app = QgsApplication([], False)
    app.initQgis()
    Processing.initialize()
    tuned_grid_clustering.classFactory(None).initProcessing()
    if not build_model().toFile(path):
        raise SystemExit(f"could not write {path}")
    print(path)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else str(DEFAULT_PATH))
