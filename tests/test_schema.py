"""Every real schema document loads; columns follow CAVE's flattening rule (cave-data-model.md)."""

from __future__ import annotations

import pytest

from tablekit.errors import SchemaError
from tablekit.schema import ColumnKind, ColumnRole, normalize_table_metadata, table_spec, view_spec


def _meta(name, st, **kw):
    return {"table_name": name, "schema_type": st, "voxel_resolution": [4, 4, 40], **kw}


def _points(doc):
    """Independent reading of a document: (prefix, ref class) for every nested point."""
    root = doc["$ref"].split("/")[-1]
    props = doc["definitions"][root]["properties"]
    return {k: v["$ref"].split("/")[-1] for k, v in props.items() if "$ref" in v}


@pytest.mark.parametrize("which", ["schemas_current", "schemas_old"])
def test_every_fixture_schema_loads_with_predicted_columns(which, request):
    docs = request.getfixturevalue(which)
    assert len(docs) == {"schemas_current": 57, "schemas_old": 49}[which]
    for st, doc in docs.items():
        ref = "x" if "target_id" in doc["definitions"][doc["$ref"].split("/")[-1]]["properties"] else None
        spec = table_spec(_meta(f"t_{st}", st, reference_table=ref), docs)
        names = set(spec.column_names)
        assert {"id", "created", "valid"} <= names, st
        root = doc["$ref"].split("/")[-1]
        props = doc["definitions"][root]["properties"]
        if root in ("DerivedSpatialPoint",):
            assert {"position", "root_id", "supervoxel_id", "dependent_chunk", "level"} <= names
            continue
        for prefix, cls in _points(doc).items():
            assert f"{prefix}_position" in names, (st, prefix)
            bound = cls in ("BoundSpatialPoint", "DerivedSpatialPoint")
            assert (f"{prefix}_root_id" in names) == bound, (st, prefix)
            assert (f"{prefix}_supervoxel_id" in names) == bound, (st, prefix)
        scalars = {k for k, v in props.items() if "$ref" not in v and k != "valid"}
        assert scalars <= names, (st, scalars - names)
        expected = 3 + len(scalars) + sum(3 if c != "SpatialPoint" else 1 for c in _points(doc).values())
        expected += 2 * sum(c == "DerivedSpatialPoint" for c in _points(doc).values())
        assert len(spec.columns) == expected, st


def test_synapse_columns_and_kinds(schemas_current):
    s = table_spec(_meta("synapses_pni_2", "synapse"), schemas_current)
    kinds = {c.name: (c.kind, c.role) for c in s.columns}
    assert kinds["size"] == (ColumnKind.FLOAT, ColumnRole.VALUE)
    assert kinds["pre_pt_root_id"] == (ColumnKind.INT, ColumnRole.ROOT_ID)
    assert kinds["post_pt_supervoxel_id"] == (ColumnKind.INT, ColumnRole.SUPERVOXEL_ID)
    assert kinds["ctr_pt_position"] == (ColumnKind.POSITION, ColumnRole.POSITION)
    assert "ctr_pt_root_id" not in kinds  # unbound point
    assert s.column("size").nullable


def test_nullable_string_and_bool_fields_are_kept(schemas_current):
    # CAVEclient drops these with the 2025-07 rendering (cave-data-model.md §1.6)
    s = table_spec(_meta("pc", "postsynaptic_compartment", reference_table="syn"), schemas_current)
    assert s.column("dendrite_class").kind is ColumnKind.STRING and s.column("dendrite_class").nullable
    assert s.column("dendrite_class").enum == ("basal", "apical")
    assert s.column("on_spine").kind is ColumnKind.BOOL
    f = table_spec(_meta("fly", "fly_nt_synapse"), schemas_current)
    assert f.column("valid_nt").kind is ColumnKind.BOOL
    assert f.column("oct").kind is ColumnKind.FLOAT


def test_both_integer_spellings_and_enums(schemas_current):
    p = table_spec(_meta("ps", "plastic_synapse"), schemas_current)
    assert p.column("plasticity").kind is ColumnKind.INT  # number/integer
    assert p.column("plasticity").enum == (0, 1, 2, 3, 4)
    v = table_spec(_meta("pr", "proofread_status"), schemas_current)
    assert v.column("valid_id").kind is ColumnKind.INT  # plain "integer"
    assert v.column("status").enum == ("non", "clean", "extended")


def test_old_rendering_plain_types(schemas_old):
    s = table_spec(_meta("n", "nucleus_detection"), schemas_old)
    assert s.column("volume").kind is ColumnKind.FLOAT
    assert s.column("bb_start_position").nullable  # optional nested point


def test_typo_desription_is_read(schemas_current):
    s = table_spec(_meta("r", "reference_tag_float", reference_table="x"), schemas_current)
    assert s.column("value").kind is ColumnKind.FLOAT


@pytest.mark.parametrize(
    "meta",
    [
        {
            "table_name": "nuc",
            "schema": "nucleus_detection",
            "voxel_resolution_x": 4.0,
            "voxel_resolution_y": 4.0,
            "voxel_resolution_z": 40.0,
        },
        {
            "table_name": "nuc",
            "schema_type": "nucleus_detection",
            "voxel_resolution": [4, 4, 40],
            "reference_table": "",
        },
        {
            "table_name": "nuc__minnie3_v1",
            "annotation_table": "nuc",
            "schema_type": "nucleus_detection",
            "schema": "nucleus_detection",
            "voxel_resolution_x": 4,
            "voxel_resolution_y": 4,
            "voxel_resolution_z": 40,
        },
    ],
    ids=["xyz-keys", "list-and-empty-ref", "segmentation-joined"],
)
def test_three_metadata_shapes(meta, schemas_current):
    m = normalize_table_metadata(meta)
    assert m["table_name"] == "nuc"
    assert m["voxel_resolution"] == [4.0, 4.0, 40.0]
    assert m["reference_table"] is None
    s = table_spec(meta, schemas_current)
    assert s.name == "nuc" and s.voxel_resolution == (4.0, 4.0, 40.0)


def test_unknown_schema_type_names_table(schemas_current):
    with pytest.raises(SchemaError, match=r"table 'x': schema type 'nope' is not among the 57 known schemas"):
        table_spec(_meta("x", "nope"), schemas_current)


def test_reference_table_without_target_id(schemas_current):
    with pytest.raises(SchemaError, match="names reference_table 'y' but schema 'synapse' has no target_id"):
        table_spec(_meta("x", "synapse", reference_table="y"), schemas_current)


def test_view_spec_from_flat_schema():
    # the real single_neurons view schema (cave-data-model.md §3.3)
    schema = {
        "id": {"type": "integer"},
        "pt_root_id": {"type": "integer"},
        "pt_position": {"type": "SpatialPoint"},
        "pt_supervoxel_id": {"type": "integer"},
        "created": {"type": "string", "format": "date-time"},
    }
    v = view_spec(
        "single_neurons", schema, {"voxel_resolution_x": 4, "voxel_resolution_y": 4, "voxel_resolution_z": 40}
    )
    assert v.is_view
    assert v.column("pt_position").kind is ColumnKind.POSITION
    assert v.column("pt_root_id").role is ColumnRole.ROOT_ID
    assert v.column("created").kind is ColumnKind.DATETIME
    assert v.voxel_resolution == (4.0, 4.0, 40.0)
