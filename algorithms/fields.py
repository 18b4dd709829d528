"""The fields the clustering algorithms add to their outputs, and how clashes are renamed."""

from __future__ import annotations

from qgis.core import QgsField, QgsFields
from qgis.PyQt.QtCore import QVariant

# Fields added to every input feature in OUTPUT.
UNIT_FIELD_ID = "cluster_id"
UNIT_FIELD_WEIGHT = "cluster_weight"
UNIT_FIELD_RADIUS = "cluster_radius_m"
UNIT_FIELD_PASS = "cluster_pass"
UNIT_FIELD_STATUS = "cluster_status"


# Suffix given to an input field whose name clashes with a field we add.
CLASH_SUFFIX = "_input"


def unit_cluster_fields() -> QgsFields:
    """The fields added to every input feature in OUTPUT."""
    fields = QgsFields()
    fields.append(QgsField(UNIT_FIELD_ID, QVariant.String))
    fields.append(QgsField(UNIT_FIELD_WEIGHT, QVariant.Double))
    fields.append(QgsField(UNIT_FIELD_RADIUS, QVariant.Double))
    fields.append(QgsField(UNIT_FIELD_PASS, QVariant.Int))
    fields.append(QgsField(UNIT_FIELD_STATUS, QVariant.String))
    return fields


def unit_output_fields(
    input_fields: QgsFields, added: QgsFields
) -> tuple[QgsFields, list[tuple[str, str]]]:
    """Input fields followed by ``added``; input fields whose names clash are renamed.

    The added fields always keep their documented names (models and scripts
    rely on ``cluster_id``); an input field with the same name (compared
    case-insensitively, as GeoPackage and Shapefile do) becomes
    ``<name>_input`` (``<name>_input_2``, ... if that is taken too). Values
    are kept.

    Returns
    -------
    fields, renamed
        The output fields and the list of (old name, new name).
    """
    taken = {f.name().lower() for f in input_fields} | {f.name().lower() for f in added}
    out = QgsFields()
    renamed: list[tuple[str, str]] = []
    added_names = {f.name().lower() for f in added}
    for input_field in input_fields:
        copy = QgsField(input_field)
        if input_field.name().lower() in added_names:
            new_name = input_field.name() + CLASH_SUFFIX
            counter = 2
            while new_name.lower() in taken:
                new_name = f"{input_field.name()}{CLASH_SUFFIX}_{counter}"
                counter += 1
            taken.add(new_name.lower())
            copy.setName(new_name)
            renamed.append((input_field.name(), new_name))
        out.append(copy)
    for added_field in added:
        out.append(QgsField(added_field))
    return out, renamed


def cluster_output_fields(with_partition: bool = False) -> QgsFields:
    """Fields of OUTPUT_CLUSTERS (``partition`` first when the run had partitions)."""
    fields = QgsFields()
    if with_partition:
        fields.append(QgsField("partition", QVariant.String))
    fields.append(QgsField("cluster_id", QVariant.String))
    fields.append(QgsField("weight", QVariant.Double))
    fields.append(QgsField("radius_m", QVariant.Double))
    fields.append(QgsField("n_units", QVariant.Int))
    fields.append(QgsField("area_km2", QVariant.Double))
    fields.append(QgsField("pass", QVariant.Int))
    fields.append(QgsField("status", QVariant.String))
    return fields
