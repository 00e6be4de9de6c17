"""Schema documents and table metadata → frozen :class:`TableSpec` / :class:`ColumnSpec`.

This is the single source of truth for what a table's columns are. Filter classes
(:mod:`tablekit.filters`), the local engine, the datastack writer and the stub generator
all read TableSpecs; none of them parses JSON Schema itself.

Column naming follows CAVE's flattening rule: a point field ``P`` becomes ``P_position``
(plus ``P_supervoxel_id`` and ``P_root_id`` when the point is bound to the segmentation);
scalar fields keep their name; every table has ``id``, ``created`` and ``valid``.
"""

from __future__ import annotations

import enum
import hashlib
import json
import math
import numbers
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any

import attrs

from .errors import SchemaError

__all__ = [
    "ColumnKind",
    "ColumnRole",
    "ColumnSpec",
    "PointKind",
    "PointSpec",
    "TableSpec",
    "check_json_schema",
    "check_name",
    "load_schema_documents",
    "normalize_table_metadata",
    "schema_hash",
    "table_spec",
    "view_spec",
]


class ColumnKind(str, enum.Enum):
    """Value kind of a column; decides which filter operators it accepts."""

    INT = "int"
    FLOAT = "float"
    STRING = "string"
    BOOL = "bool"
    DATETIME = "datetime"
    POSITION = "position"


class ColumnRole(str, enum.Enum):
    """What a column is for, independent of its value kind."""

    ID = "id"  # the annotation id (primary key)
    BOOKKEEPING = "bookkeeping"  # created / valid
    VALUE = "value"  # an ordinary schema field
    TARGET_ID = "target_id"  # reference schemas: id of a row of the reference table
    ROOT_ID = "root_id"  # P_root_id of a bound/derived point
    SUPERVOXEL_ID = "supervoxel_id"  # P_supervoxel_id of a bound/derived point
    POSITION = "position"  # P_position (3 coordinates, stored split as _x/_y/_z)
    POINT_EXTRA = "point_extra"  # derived points: dependent_chunk, level


class PointKind(str, enum.Enum):
    BOUND = "bound"  # BoundSpatialPoint: position + supervoxel_id + root_id
    UNBOUND = "unbound"  # SpatialPoint: position only
    DERIVED = "derived"  # DerivedSpatialPoint: + dependent_chunk, level


@attrs.frozen
class ColumnSpec:
    """One flat column of a table, as stored and as returned in results."""

    name: str
    kind: ColumnKind
    role: ColumnRole
    nullable: bool = False
    description: str = ""
    enum: tuple[Any, ...] | None = None
    point: str | None = None  # point prefix ("pt", "pre_pt"; "" for a top-level point)

    @property
    def is_identifier(self) -> bool:
        """id, root and supervoxel ids: equality, membership and exclusion (and ranges on ``id``)."""
        return self.role in (ColumnRole.ID, ColumnRole.ROOT_ID, ColumnRole.SUPERVOXEL_ID)

    @property
    def split_names(self) -> tuple[str, str, str]:
        """The three stored columns of a position: ``<name>_x/_y/_z``."""
        return (f"{self.name}_x", f"{self.name}_y", f"{self.name}_z")


@attrs.frozen
class PointSpec:
    """A spatial point field of a schema (``pt``, ``pre_pt`` …)."""

    prefix: str
    kind: PointKind
    nullable: bool
    description: str = ""

    def column(self, suffix: str) -> str:
        return f"{self.prefix}_{suffix}" if self.prefix else suffix


def _freeze(m: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return MappingProxyType(dict(m or {}))


@attrs.frozen
class TableSpec:
    """Everything tablekit knows about one table or view: its columns and metadata."""

    name: str
    columns: tuple[ColumnSpec, ...]
    schema_type: str | None = None
    description: str = ""
    voxel_resolution: tuple[float, float, float] | None = None
    reference_table: str | None = None
    notice_text: str | None = None
    points: tuple[PointSpec, ...] = ()
    is_view: bool = False
    live_compatible: bool = False
    metadata: Mapping[str, Any] = attrs.field(factory=dict, converter=_freeze, eq=False)

    def __attrs_post_init__(self) -> None:
        names = [c.name for c in self.columns]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise SchemaError(f"table {self.name!r}: duplicate column names {dup} after flattening")

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    def column(self, name: str) -> ColumnSpec:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(name)

    def has_column(self, name: str) -> bool:
        return any(c.name == name for c in self.columns)

    @property
    def positions(self) -> tuple[ColumnSpec, ...]:
        return tuple(c for c in self.columns if c.kind is ColumnKind.POSITION)

    @property
    def stored_columns(self) -> tuple[str, ...]:
        """Physical column names in result order, positions split into ``_x/_y/_z``."""
        out: list[str] = []
        for c in self.columns:
            out.extend(c.split_names if c.kind is ColumnKind.POSITION else (c.name,))
        return tuple(out)


def check_name(what: str, name: Any) -> str:
    """``name`` if it can name a table, view or column: a non-empty string of printable
    characters. A line break, CR, NUL, U+2028, U+0085, a lone surrogate or another control
    character would end a line of generated code or a log line; such a name is refused."""
    if not isinstance(name, str) or not name:
        raise SchemaError(f"{what} name {name!r} must be a non-empty string")
    bad = next((ch for ch in name if not ch.isprintable()), None)
    if bad is not None:
        raise SchemaError(
            f"{what} name {name!r} contains the non-printable character U+{ord(bad):04X}; names "
            "must be printable text (no line breaks, control characters or surrogates): rename it"
        )
    return name


# --------------------------------------------------------------------------- schema documents


def check_json_schema(schema_type: str, doc: Mapping[str, Any]) -> None:
    """Refuse a schema document that is not valid JSON Schema by its own metaschema (jsonschema's
    ``check_schema``; CAVE's documents are draft-07), naming the schema type, where and why — a
    custom schema given to ``build_datastack`` with ``"type": "integr"`` would otherwise fail later
    and less clearly. All 106 real CAVE documents pass."""
    from jsonschema.exceptions import SchemaError as _InvalidSchema
    from jsonschema.validators import validator_for

    try:
        validator_for(doc).check_schema(doc)
    except _InvalidSchema as e:
        where = "/".join(str(p) for p in e.absolute_path) or "the document's top level"
        raise SchemaError(
            f"schema {schema_type!r} is not a valid JSON Schema at {where}: {e.message}. Fix the document "
            "(a CAVE schema is a draft-07 JSON Schema with '$ref' and 'definitions')"
        ) from None


def load_schema_documents(docs: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """Check the shape of a ``{schema_type: document}`` mapping (``types_all``)."""
    out: dict[str, Mapping[str, Any]] = {}
    for key, doc in docs.items():
        if not isinstance(doc, Mapping) or "definitions" not in doc or "$ref" not in doc:
            raise SchemaError(
                f"schema {key!r}: expected a JSON Schema document with '$ref' and 'definitions'"
            )
        out[key] = doc
    return out


def _types(prop: Mapping[str, Any]) -> tuple[list[str], bool]:
    t = prop.get("type")
    if t is None:
        return [], True
    ts = [t] if isinstance(t, str) else list(t)
    nullable = "null" in ts
    return [x for x in ts if x != "null"], nullable


_POINT_REFS = {
    "BoundSpatialPoint": PointKind.BOUND,
    "SpatialPoint": PointKind.UNBOUND,
    "DerivedSpatialPoint": PointKind.DERIVED,
}


def _scalar_kind(schema: str, field: str, prop: Mapping[str, Any]) -> tuple[ColumnKind, bool]:
    ts, nullable = _types(prop)
    fmt = prop.get("format")
    if fmt in ("integer", "int", "int64", "int32"):
        return ColumnKind.INT, nullable
    if fmt in ("float", "double", "decimal"):
        return ColumnKind.FLOAT, nullable
    if fmt in ("date-time", "datetime", "date"):
        return ColumnKind.DATETIME, nullable
    if not ts:
        raise SchemaError(f"schema {schema!r}, field {field!r}: no 'type' given")
    t = ts[0]
    if t == "integer":
        return ColumnKind.INT, nullable
    if t == "number":
        return ColumnKind.FLOAT, nullable
    if t == "string":
        return ColumnKind.STRING, nullable
    if t == "boolean":
        return ColumnKind.BOOL, nullable
    raise SchemaError(
        f"schema {schema!r}, field {field!r}: unsupported type {prop.get('type')!r} "
        f"(format {fmt!r}); tablekit understands integer, number, string, boolean and date-time"
    )


def _point_columns(point: PointSpec) -> list[ColumnSpec]:
    cols: list[ColumnSpec] = []
    n = point.nullable
    if point.kind in (PointKind.BOUND, PointKind.DERIVED):
        cols.append(
            ColumnSpec(
                point.column("supervoxel_id"),
                ColumnKind.INT,
                ColumnRole.SUPERVOXEL_ID,
                nullable=True,
                description=f"supervoxel id under {point.prefix or 'the point'}",
                point=point.prefix,
            )
        )
        cols.append(
            ColumnSpec(
                point.column("root_id"),
                ColumnKind.INT,
                ColumnRole.ROOT_ID,
                nullable=True,
                description=f"root id (segment) under {point.prefix or 'the point'}, "
                "valid for the queried version or timestamp",
                point=point.prefix,
            )
        )
    if point.kind is PointKind.DERIVED:
        cols.append(
            ColumnSpec(
                point.column("dependent_chunk"),
                ColumnKind.INT,
                ColumnRole.POINT_EXTRA,
                nullable=n,
                point=point.prefix,
            )
        )
        cols.append(
            ColumnSpec(
                point.column("level"),
                ColumnKind.INT,
                ColumnRole.POINT_EXTRA,
                nullable=True,
                point=point.prefix,
            )
        )
    cols.append(
        ColumnSpec(
            point.column("position"),
            ColumnKind.POSITION,
            ColumnRole.POSITION,
            nullable=n,
            description=point.description,
            point=point.prefix,
        )
    )
    return cols


def _columns_from_document(
    schema_type: str, doc: Mapping[str, Any]
) -> tuple[list[ColumnSpec], list[PointSpec]]:
    try:
        root = str(doc["$ref"]).rsplit("/", 1)[-1]
        definitions = doc["definitions"]
        main = definitions[root]
    except (KeyError, TypeError) as e:
        raise SchemaError(
            f"schema {schema_type!r}: cannot find the root definition named by '$ref' ({e})"
        ) from e
    props: Mapping[str, Any] = main.get("properties", {})
    required = set(main.get("required", ()))
    scalars: list[ColumnSpec] = []
    points: list[PointSpec] = []
    # A schema that *is* a point (derived_spatial_point) has no prefix.
    if root in _POINT_REFS and root != "SpatialPoint" and root != "BoundSpatialPoint":
        points.append(PointSpec("", _POINT_REFS[root], nullable=False))
    elif root in ("SpatialPoint", "BoundSpatialPoint"):
        points.append(PointSpec("", _POINT_REFS[root], nullable=False))
    else:
        for field in sorted(props):
            prop = props[field]
            check_name(f"schema {schema_type!r}: field", field)
            if field == "valid":
                continue
            ref = prop.get("$ref")
            if ref is not None:
                target = str(ref).rsplit("/", 1)[-1]
                if target not in _POINT_REFS:
                    raise SchemaError(
                        f"schema {schema_type!r}, field {field!r}: nested definition {target!r} "
                        "is not a spatial point; tablekit supports BoundSpatialPoint, SpatialPoint "
                        "and DerivedSpatialPoint"
                    )
                points.append(
                    PointSpec(
                        field,
                        _POINT_REFS[target],
                        nullable=field not in required,
                        description=str(prop.get("description", "")),
                    )
                )
                continue
            kind, nullable = _scalar_kind(schema_type, field, prop)
            role = ColumnRole.TARGET_ID if field == "target_id" else ColumnRole.VALUE
            desc = prop.get("description", prop.get("desription", ""))
            en = prop.get("enum")
            scalars.append(
                ColumnSpec(
                    field,
                    kind,
                    role,
                    nullable=nullable or field not in required,
                    description=str(desc or ""),
                    enum=tuple(en) if en else None,
                )
            )
    return scalars, points


_BASE = (
    ColumnSpec("id", ColumnKind.INT, ColumnRole.ID, description="annotation id (unique in the table)"),
    ColumnSpec(
        "created",
        ColumnKind.DATETIME,
        ColumnRole.BOOKKEEPING,
        description="when the annotation was made (UTC)",
    ),
    ColumnSpec(
        "valid",
        ColumnKind.BOOL,
        ColumnRole.BOOKKEEPING,
        nullable=True,
        description="is this annotation valid",
    ),
)


def resolution_triple(value: Any) -> tuple[float, float, float] | None:
    """``value`` as three positive finite floats (nm per unit), or ``None`` if it is not that
    (a string such as ``"444"`` is not three numbers, nor are bools)."""
    if isinstance(value, (str, bytes, dict)) or not hasattr(value, "__iter__"):
        return None
    try:
        items = list(value)
    except TypeError:
        return None
    if not all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in items):
        return None
    out = tuple(float(v) for v in items)
    if len(out) != 3 or not all(math.isfinite(v) and v > 0 for v in out):
        return None
    return out  # type: ignore[return-value]


def _resolution(meta: Mapping[str, Any]) -> tuple[float, float, float] | None:
    vr = meta.get("voxel_resolution")
    if vr is None and "voxel_resolution_x" in meta:
        vr = [meta.get("voxel_resolution_x"), meta.get("voxel_resolution_y"), meta.get("voxel_resolution_z")]
    if vr is None:
        return None
    out = resolution_triple(vr)
    if out is None:
        raise SchemaError(f"voxel_resolution {vr!r} is not three positive numbers")
    return out


def normalize_table_metadata(meta: Mapping[str, Any]) -> dict[str, Any]:
    """Accept the three shapes of table metadata CAVE servers send and return one.

    * ``voxel_resolution_x/_y/_z`` or a ready ``voxel_resolution`` list → ``voxel_resolution``;
    * ``annotation_table`` (older servers, with ``table_name = <table>__<pcg>``) wins as the name;
    * ``schema`` / ``schema_type``: whichever is present fills the other;
    * ``reference_table`` ``""`` → ``None``.
    """
    m = dict(meta)
    name = m.get("annotation_table") or m.get("table_name")
    if not name:
        raise SchemaError(f"table metadata without 'table_name': keys {sorted(m)}")
    m["table_name"] = name
    m.pop("annotation_table", None)
    st = m.get("schema_type") or m.get("schema")
    m["schema_type"] = st
    m["schema"] = st
    m["reference_table"] = m.get("reference_table") or None
    res = _resolution(m)
    for k in ("voxel_resolution_x", "voxel_resolution_y", "voxel_resolution_z"):
        m.pop(k, None)
    m["voxel_resolution"] = list(res) if res is not None else None
    return m


def table_spec(metadata: Mapping[str, Any], schemas: Mapping[str, Mapping[str, Any]]) -> TableSpec:
    """Build the TableSpec of one table from its metadata and the schema documents."""
    meta = normalize_table_metadata(metadata)
    name = check_name("table", meta["table_name"])
    st = meta["schema_type"]
    if not st:
        raise SchemaError(f"table {name!r}: metadata names no schema_type")
    if st not in schemas:
        raise SchemaError(
            f"table {name!r}: schema type {st!r} is not among the {len(schemas)} known schemas; "
            "refresh the schema cache or check the schema service"
        )
    scalars, points = _columns_from_document(st, schemas[st])
    cols: list[ColumnSpec] = list(_BASE)
    cols.extend(scalars)
    for p in points:
        cols.extend(_point_columns(p))
    has_target = any(c.role is ColumnRole.TARGET_ID for c in cols)
    ref = meta["reference_table"]
    if ref and not has_target:
        raise SchemaError(
            f"table {name!r}: metadata names reference_table {ref!r} but schema {st!r} has no target_id"
        )
    return TableSpec(
        name=name,
        columns=tuple(cols),
        schema_type=st,
        description=str(meta.get("description") or ""),
        voxel_resolution=_resolution(meta),
        reference_table=ref if has_target else None,
        notice_text=meta.get("notice_text") or None,
        points=tuple(points),
        metadata=meta,
    )


_VIEW_TYPES = {
    "integer": ColumnKind.INT,
    "float": ColumnKind.FLOAT,
    "number": ColumnKind.FLOAT,
    "string": ColumnKind.STRING,
    "boolean": ColumnKind.BOOL,
}


def view_spec(
    name: str, schema: Mapping[str, Mapping[str, Any]], metadata: Mapping[str, Any] | None = None
) -> TableSpec:
    """Build the TableSpec of a view from its flat schema ``{column: {"type": …}}`` (§3.3).

    Views have no nesting: a ``SpatialPoint`` column is already the position column (``pt_position``),
    root and supervoxel ids are recognised by their names.
    """
    meta = dict(metadata or {})
    check_name("view", name)
    cols: list[ColumnSpec] = []
    points: list[PointSpec] = []
    for col, t in schema.items():
        check_name(f"view {name!r}: column", col)
        typ = t.get("type") if isinstance(t, Mapping) else t
        fmt = t.get("format") if isinstance(t, Mapping) else None
        if typ == "SpatialPoint":
            prefix = col[: -len("_position")] if col.endswith("_position") else col
            cols.append(
                ColumnSpec(col, ColumnKind.POSITION, ColumnRole.POSITION, nullable=True, point=prefix)
            )
            points.append(PointSpec(prefix, PointKind.UNBOUND, nullable=True))
            continue
        if fmt == "date-time":
            kind = ColumnKind.DATETIME
        elif typ in _VIEW_TYPES:
            kind = _VIEW_TYPES[typ]
        else:
            raise SchemaError(f"view {name!r}, column {col!r}: unsupported type {typ!r}")
        if col == "id":
            role = ColumnRole.ID
        elif col.endswith("root_id") and kind is ColumnKind.INT:
            role = ColumnRole.ROOT_ID
        elif col.endswith("supervoxel_id") and kind is ColumnKind.INT:
            role = ColumnRole.SUPERVOXEL_ID
        else:
            role = ColumnRole.VALUE
        cols.append(ColumnSpec(col, kind, role, nullable=True))
    return TableSpec(
        name=name,
        columns=tuple(cols),
        description=str(meta.get("description") or ""),
        voxel_resolution=_resolution(meta),
        notice_text=meta.get("notice_text") or None,
        points=tuple(points),
        is_view=True,
        live_compatible=bool(meta.get("live_compatible", False)),
        metadata=meta,
    )


def schema_hash(specs: Iterable[TableSpec]) -> str:
    """A short, stable hash of the column layout of some specs (for stub staleness checks)."""
    payload = [
        [
            s.name,
            s.schema_type,
            s.reference_table,
            [[c.name, c.kind.value, c.role.value, c.nullable] for c in s.columns],
        ]
        for s in sorted(specs, key=lambda s: s.name)
    ]
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]
