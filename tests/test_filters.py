"""Filter classes: every row of design.md §3, validated when the filter object is built.

These tests need no backend: validation happens before any request. Query results are tested
against the demo datastack in test_queries.py.
"""

from __future__ import annotations

import datetime as dt
import inspect

import numpy as np
import pandas as pd
import pytest

from tablekit.errors import FilterValueError, OperatorError, UnknownColumnError
from tablekit.filters import make_filter_class
from tablekit.query import Predicate
from tablekit.schema import table_spec, view_spec

UTC = dt.timezone.utc


def _spec(name, st, docs, **kw):
    return table_spec({"table_name": name, "schema_type": st, "voxel_resolution": [4, 4, 40], **kw}, docs)


@pytest.fixture(scope="module")
def N(schemas_current):
    return make_filter_class(
        _spec("nucleus_detection_v0", "nucleus_detection", schemas_current), None, None, 0
    )


@pytest.fixture(scope="module")
def S(schemas_current):
    return make_filter_class(_spec("synapses_pni_2", "synapse", schemas_current), None, None, 0)


@pytest.fixture(scope="module")
def P(schemas_current):
    return make_filter_class(
        _spec("proofreading_status_and_strategy", "compartment_proofread_status_strategy", schemas_current),
        None,
        None,
        0,
    )


@pytest.fixture(scope="module")
def R(schemas_current):
    nuc = _spec("nucleus_detection_v0", "nucleus_detection", schemas_current)
    ref = _spec(
        "aibs_metamodel_celltypes_v661",
        "cell_type_reference",
        schemas_current,
        reference_table="nucleus_detection_v0",
    )
    return make_filter_class(ref, nuc, None, 0)


def preds(f):
    return list(f._predicates)


# ---------------------------------------------------------------- the rows of design.md §3
def test_scalar_is_equality(N):
    assert preds(N(pt_root_id=864691135000000001)) == [
        Predicate("nucleus_detection_v0", "pt_root_id", "==", 864691135000000001)
    ]


@pytest.mark.parametrize(
    "value",
    [
        [3, 1, 2],
        (3, 1, 2),
        {1, 2, 3},
        np.array([3, 1, 2]),
        pd.Series([3, 1, 2]),
        pd.Index([3, 1, 2]),
        range(1, 4),
    ],
    ids=["list", "tuple", "set", "ndarray", "Series", "Index", "range"],
)
def test_list_likes_are_membership(N, value):
    (p,) = preds(N(id=value))
    assert p.op == "in" and sorted(p.value) == [1, 2, 3]
    assert all(type(v) is int for v in p.value)


def test_empty_membership_matches_nothing(N):
    f = N(pt_root_id=[])
    (p,) = preds(f)
    assert p.op == "in" and p.value == () and p.matches_nothing


def test_ranges_on_int_float_datetime_and_id(N):
    f = N(volume={">": 500, "<=": 750}, id={">=": 100000}, created={"<": dt.datetime(2025, 1, 1, tzinfo=UTC)})
    ops = {(p.column, p.op): p.value for p in preds(f)}
    assert ops == {
        ("volume", ">"): 500.0,
        ("volume", "<="): 750.0,
        ("id", ">="): 100000,
        ("created", "<"): dt.datetime(2025, 1, 1, tzinfo=UTC),
    }


def test_exclusion(N):
    f = N(pt_root_id={"!=": 0}, id={"not in": [1, 2]})
    assert {(p.column, p.op, p.value) for p in preds(f)} == {
        ("pt_root_id", "!=", 0),
        ("id", "not in", (1, 2)),
    }


def test_regex_on_strings(P):
    (p,) = preds(P(strategy_axon={"regex": "^axon_.*extended$"}))
    assert (p.op, p.value) == ("regex", "^axon_.*extended$")


def test_operator_the_kind_does_not_support(N, P):
    with pytest.raises(OperatorError) as e:
        N(pt_root_id={">": 5})
    assert str(e.value) == (
        "nucleus_detection_v0: column 'pt_root_id' (root id) does not support operator '>'; allowed: "
        "['==', 'in', '!=', 'not in']. Ranges need an integer, float or datetime column (or id); "
        "'pt_root_id' is a root id."
    )
    with pytest.raises(OperatorError, match="column 'volume' \\(float\\) does not support operator 'regex'"):
        N(volume={"regex": "1"})
    with pytest.raises(OperatorError, match="column 'status_axon' \\(bool\\) does not support operator '<'"):
        P(status_axon={"<": True})


def test_unknown_operator(N):
    with pytest.raises(
        OperatorError,
        match=r"does not support operator '=>'; allowed: \['==', 'in', '!=', 'not in', '<', '<=', '>', '>='\]",
    ):
        N(volume={"=>": 3})


def test_unknown_column_suggests_close_matches(N):
    with pytest.raises(UnknownColumnError) as e:
        N(volum=3)
    assert str(e.value).startswith(
        "nucleus_detection_v0: no column 'volum' (did you mean 'volume'?). Filterable columns: id,"
    )
    assert isinstance(e.value, TypeError)


def test_position_column_points_to_bbox(N):
    with pytest.raises(
        UnknownColumnError,
        match=r"no column 'pt_position'; positions are filtered with a box: pt_position_bbox=",
    ):
        N(pt_position=[1, 2, 3])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"volume": "big"},
            "column 'volume' (float) got 'big' of type str: expected a number. Pass a float or int",
        ),
        (
            {"id": 1.5},
            "column 'id' (id) got 1.5 of type float: a float for an integer column (ids above 2**53 lose digits as floats). Pass an int",
        ),
        (
            {"pt_root_id": 8.6e17},
            "column 'pt_root_id' (root id) got 8.6e+17 of type float: a float for an integer column (ids above 2**53 lose digits as floats). Pass an int, e.g. int(x)",
        ),
        (
            {"volume": float("nan")},
            "column 'volume' (float) got nan of type float: NaN/inf never match anything. Pass a finite number",
        ),
        (
            {"pt_root_id": True},
            "column 'pt_root_id' (root id) got True of type bool: a bool is not an integer. Pass an int",
        ),
        ({"id": "5"}, "column 'id' (id) got '5' of type str: expected an integer. Pass an integer id"),
        (
            {"id": 2**64},
            "column 'id' (id) got 18446744073709551616 of type int: outside the signed 64-bit range of CAVE ids and integers. Check the value",
        ),
    ],
)
def test_wrong_value_types(N, kwargs, message):
    with pytest.raises(FilterValueError) as e:
        N(**kwargs)
    assert str(e.value) == f"nucleus_detection_v0: {message}"
    assert isinstance(e.value, ValueError)


def test_wrong_type_inside_a_list(N):
    with pytest.raises(FilterValueError, match="column 'pt_root_id' \\(root id\\) got 'x' of type str"):
        N(pt_root_id=[1, "x"])


def test_string_enum_enforced(schemas_current):
    cls = make_filter_class(_spec("pr", "proofread_status", schemas_current), None, None, 0)
    with pytest.raises(
        FilterValueError,
        match=r"column 'status' \(string\) got 'Clean' of type str: not one of the allowed values \['non', 'clean', 'extended'\]",
    ):
        cls(status="Clean")
    assert preds(cls(status=["clean", "extended"]))[0].value == ("clean", "extended")


def test_bbox(N):
    (p,) = preds(N(pt_position_bbox=np.array([[10, 20, 30], [40, 50, 60]])))
    assert p == Predicate("nucleus_detection_v0", "pt_position", "bbox", ((10, 20, 30), (40, 50, 60)))


@pytest.mark.parametrize(
    ("box", "why"),
    [
        ([[0, 0, 0], [1, 1]], "not a 2×3 box (two corners"),
        ([[0, 0], [1, 1]], "shape (2, 2), expected (2, 3)"),
        ([[0, 0, 5], [1, 1, 5]], "min z 5 is not below max z 5"),
        ([[0, 0, 0], [1, float("inf"), 1]], "coordinate inf is not finite"),
        ([[0, 0, 0], [1, "a", 1]], "coordinate 'a' is not a number"),
        ("0,0,0,1,1,1", "not a 2×3 box"),
    ],
)
def test_bad_bbox(N, box, why):
    with pytest.raises(FilterValueError) as e:
        N(pt_position_bbox=box)
    assert why in str(e.value)
    assert str(e.value).startswith("nucleus_detection_v0: pt_position_bbox got ")
    assert str(e.value).endswith("with x0 < x1, y0 < y1, z0 < z1")


def test_nullable_fields_are_filterable(schemas_current):
    cls = make_filter_class(
        _spec("pc", "postsynaptic_compartment", schemas_current, reference_table="s"), None, None, 0
    )
    assert {"dendrite_class", "on_spine"} <= set(cls.fields)


def test_supervoxel_ids_are_identifier_columns(N):
    (p,) = preds(N(pt_supervoxel_id={"not in": [0]}))
    assert (p.column, p.op, p.value) == ("pt_supervoxel_id", "not in", (0,))
    with pytest.raises(OperatorError):
        N(pt_supervoxel_id={">": 0})


def test_view_spatial_column_is_column_bbox():
    v = view_spec("single_neurons", {"id": {"type": "integer"}, "pt_position": {"type": "SpatialPoint"}}, {})
    cls = make_filter_class(v, None, None, 0)
    assert cls.spatial_fields == ("pt_position_bbox",)


def test_naive_datetime_is_refused(N):
    with pytest.raises(FilterValueError) as e:
        N(created={">": dt.datetime(2025, 1, 1)})
    assert (
        "is naive (no time zone). All timestamps are UTC: pass an aware datetime, e.g. datetime.now(timezone.utc)"
        in str(e.value)
    )


def test_aware_timestamps_in_all_forms(N):
    want = dt.datetime(2025, 1, 1, 12, tzinfo=UTC)
    for v in (want, pd.Timestamp("2025-01-01T12:00Z"), "2025-01-01T13:00:00+01:00", "2025-01-01T12:00:00Z"):
        assert preds(N(created={">": v}))[0].value == want


# ---------------------------------------------------------------- reference tables
def test_reference_merge_fields_and_routing(R):
    assert R.fields[:5] == ("id", "created", "volume", "pt_supervoxel_id", "pt_root_id")
    assert {"id_ref", "created_ref", "cell_type", "classification_system", "target_id"} <= set(R.fields)
    ps = preds(R(pt_root_id=5, id_ref=3, cell_type="5P-IT"))
    assert [(p.table, p.column) for p in ps] == [
        ("nucleus_detection_v0", "pt_root_id"),
        ("aibs_metamodel_celltypes_v661", "id"),
        ("aibs_metamodel_celltypes_v661", "cell_type"),
    ]


# ---------------------------------------------------------------- class surface
def test_fields_numeric_spatial(N):
    assert N.fields == (
        "id",
        "created",
        "volume",
        "pt_supervoxel_id",
        "pt_root_id",
        "bb_end_position_bbox",
        "bb_start_position_bbox",
        "pt_position_bbox",
    )
    assert N.numeric_fields == ("id", "created", "volume")
    assert N.spatial_fields == ("bb_end_position_bbox", "bb_start_position_bbox", "pt_position_bbox")


def test_signature_and_docstring(N):
    sig = inspect.signature(N)
    assert all(
        p.kind is inspect.Parameter.KEYWORD_ONLY and p.default is None for p in sig.parameters.values()
    )
    assert list(sig.parameters) == list(N.fields)
    assert "the volume of the nucleus detected in um^3" in N.__doc__
    assert "4×4×40 nm" in N.__doc__
    params = inspect.signature(N.query).parameters
    assert list(params)[:3] == ["self", "select_columns", "offset"]
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in list(params.values())[1:])
    assert "Columns of nucleus_detection_v0" in N.query.__doc__ and "volume" in N.query.__doc__


def test_keyword_only(N):
    with pytest.raises(TypeError, match="takes filters as keyword arguments only"):
        N(5)


def test_repr_shows_given_filters(N):
    assert repr(N(volume={">": 5}, id=[1])) == "nucleus_detection_v0(id=[1], volume={'>': 5})"


def test_filters_are_not_shared_between_instances(N):
    # CAVEclient 6.1.0 regression: a filtered instance silently lost its filter
    a, b = N(id=[1]), N()
    assert preds(a) and not preds(b)
    assert preds(N(id=[1])) == preds(a)


def test_hazardous_column_names_are_mangled_and_reachable(schemas_current):
    doc = {
        "$ref": "#/definitions/H",
        "definitions": {
            "H": {
                "type": "object",
                "properties": {
                    "class": {"type": "string"},
                    "query": {"type": "integer"},
                    "fields": {"type": "string"},
                    "_private": {"type": "integer"},
                    "2nd": {"type": "integer"},
                    "OSI": {"type": "number", "format": "float"},
                },
            }
        },
    }
    spec = table_spec({"table_name": "hazard", "schema_type": "h", "voxel_resolution": [1, 1, 1]}, {"h": doc})
    cls = make_filter_class(spec, None, None, 0)
    assert {"class_", "query_", "fields_", "_private_", "f_2nd", "OSI"} <= set(cls.fields)
    assert callable(cls.query) and isinstance(cls.fields, tuple)
    f = cls(**{"class": "a", "query": 1, "OSI": 0.5})
    assert {(p.column, p.value) for p in preds(f)} == {("class", "a"), ("query", 1), ("OSI", 0.5)}
    assert preds(cls(class_="a")) == [Predicate("hazard", "class", "==", "a")]
