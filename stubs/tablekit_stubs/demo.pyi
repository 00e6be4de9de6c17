# Typed stubs of the tables and views of datastack 'demo', written by `tablekit stubs`.
# DO NOT EDIT: regenerate with
#   tablekit stubs demo --out DIR
# datastack: demo
# version: 943
# schema_hash: 6858735ca9359f5c
# tablekit: 0.1.0

"""Tables and views of datastack 'demo'.

Use: ``if TYPE_CHECKING: from tablekit_stubs import demo``, then
``tables = cast("demo.Tables", client.tables)``.
"""

import datetime
from builtins import type as _type
from collections.abc import Iterator, Sequence, Set as AbstractSet
from typing import Any, ClassVar, Generic, Literal, TypeAlias, TypedDict, TypeVar, overload
from typing import Literal as _Literal
from typing import overload as _overload

import numpy
from tablekit import TableFilter
from tablekit.stubgen import ArrowTable, DataFrame, Index, Series

_C = TypeVar("_C", bound=str)
_D = TypeVar("_D")

_When: TypeAlias = datetime.datetime | str
_Array: TypeAlias = numpy.ndarray[Any, Any] | Series | Index
_Ints: TypeAlias = Sequence[int] | AbstractSet[int] | _Array
_Floats: TypeAlias = Sequence[float] | AbstractSet[float] | _Array
_Strs: TypeAlias = Sequence[str] | AbstractSet[str] | _Array
_Bools: TypeAlias = Sequence[bool] | AbstractSet[bool] | _Array
_Whens: TypeAlias = Sequence[_When] | AbstractSet[_When] | _Array
_Point: TypeAlias = tuple[float, float, float]
_BBox: TypeAlias = tuple[_Point, _Point] | list[_Point] | list[list[int]] | list[list[float]] | numpy.ndarray[Any, Any]
_IdOps = TypedDict("_IdOps", {"==": int, "in": _Ints, "!=": int, "not in": _Ints, "<": int, "<=": int, ">": int, ">=": int}, total=False)
_WhenOps = TypedDict("_WhenOps", {"==": _When, "in": _Whens, "!=": _When, "not in": _Whens, "<": _When, "<=": _When, ">": _When, ">=": _When}, total=False)
_FloatOps = TypedDict("_FloatOps", {"==": float, "in": _Floats, "!=": float, "not in": _Floats, "<": float, "<=": float, ">": float, ">=": float}, total=False)
_IdentOps = TypedDict("_IdentOps", {"==": int, "in": _Ints, "!=": int, "not in": _Ints}, total=False)
_StrOps = TypedDict("_StrOps", {"==": str, "in": _Strs, "!=": str, "not in": _Strs, "regex": str}, total=False)
_IntOps = TypedDict("_IntOps", {"==": int, "in": _Ints, "!=": int, "not in": _Ints, "<": float, "<=": float, ">": float, ">=": float}, total=False)
_BoolOps = TypedDict("_BoolOps", {"==": bool, "in": _Bools, "!=": bool, "not in": _Bools}, total=False)

class _Table(TableFilter, Generic[_C]):
    """Query methods shared by every table and view; ``_C`` is the result column names."""

    table_name: ClassVar[str]
    fields: ClassVar[tuple[str, ...]]
    numeric_fields: ClassVar[tuple[str, ...]]
    spatial_fields: ClassVar[tuple[str, ...]]
    @overload  # type: ignore[override]
    def query(
        self,
        *,
        select_columns: Sequence[_C] | None = None,
        offset: int = 0,
        limit: int | None = None,
        split_positions: bool = False,
        materialization_version: int | None = None,
        timestamp: _When | None = None,
        metadata: bool = True,
        desired_resolution: Sequence[float] | numpy.ndarray[Any, Any] | None = None,
        get_counts: bool = False,
        random_sample: int | None = None,
        output: Literal["arrow"],
        allow_invalid_root_ids: bool = False,
        allow_missing_lookups: bool = False,
        complete: bool = True,
    ) -> ArrowTable: ...
    @overload
    def query(  # pyright: ignore[reportIncompatibleMethodOverride]
        self,
        *,
        select_columns: Sequence[_C] | None = None,
        offset: int = 0,
        limit: int | None = None,
        split_positions: bool = False,
        materialization_version: int | None = None,
        timestamp: _When | None = None,
        metadata: bool = True,
        desired_resolution: Sequence[float] | numpy.ndarray[Any, Any] | None = None,
        get_counts: bool = False,
        random_sample: int | None = None,
        output: Literal["pandas"] = "pandas",
        allow_invalid_root_ids: bool = False,
        allow_missing_lookups: bool = False,
        complete: bool = True,
    ) -> DataFrame:
        """Run the query: a pandas DataFrame, or a pyarrow.Table with output="arrow"."""

    @overload  # type: ignore[override]
    def live_query(
        self,
        timestamp: _When,
        *,
        select_columns: Sequence[_C] | None = None,
        offset: int = 0,
        limit: int | None = None,
        split_positions: bool = False,
        metadata: bool = True,
        desired_resolution: Sequence[float] | numpy.ndarray[Any, Any] | None = None,
        random_sample: int | None = None,
        output: Literal["arrow"],
        allow_invalid_root_ids: bool = False,
        allow_missing_lookups: bool = False,
        complete: bool = True,
    ) -> ArrowTable: ...
    @overload
    def live_query(  # pyright: ignore[reportIncompatibleMethodOverride]
        self,
        timestamp: _When,
        *,
        select_columns: Sequence[_C] | None = None,
        offset: int = 0,
        limit: int | None = None,
        split_positions: bool = False,
        metadata: bool = True,
        desired_resolution: Sequence[float] | numpy.ndarray[Any, Any] | None = None,
        random_sample: int | None = None,
        output: Literal["pandas"] = "pandas",
        allow_invalid_root_ids: bool = False,
        allow_missing_lookups: bool = False,
        complete: bool = True,
    ) -> DataFrame:
        """The rows present at ``timestamp`` (timezone-aware, or "now"), root ids as of then."""

    @overload  # type: ignore[override]
    @classmethod
    def get_all(
        cls,
        *,
        select_columns: Sequence[_C] | None = None,
        offset: int = 0,
        limit: int | None = None,
        split_positions: bool = False,
        materialization_version: int | None = None,
        timestamp: _When | None = None,
        metadata: bool = True,
        desired_resolution: Sequence[float] | numpy.ndarray[Any, Any] | None = None,
        get_counts: bool = False,
        random_sample: int | None = None,
        output: Literal["arrow"],
        allow_invalid_root_ids: bool = False,
        allow_missing_lookups: bool = False,
        complete: bool = True,
    ) -> ArrowTable: ...
    @overload
    @classmethod
    def get_all(  # pyright: ignore[reportIncompatibleMethodOverride]
        cls,
        *,
        select_columns: Sequence[_C] | None = None,
        offset: int = 0,
        limit: int | None = None,
        split_positions: bool = False,
        materialization_version: int | None = None,
        timestamp: _When | None = None,
        metadata: bool = True,
        desired_resolution: Sequence[float] | numpy.ndarray[Any, Any] | None = None,
        get_counts: bool = False,
        random_sample: int | None = None,
        output: Literal["pandas"] = "pandas",
        allow_invalid_root_ids: bool = False,
        allow_missing_lookups: bool = False,
        complete: bool = True,
    ) -> DataFrame:
        """Every row of the table: ``T().query(...)``."""

    @overload  # type: ignore[override]
    @classmethod
    def get_all_live(
        cls,
        timestamp: _When,
        *,
        select_columns: Sequence[_C] | None = None,
        offset: int = 0,
        limit: int | None = None,
        split_positions: bool = False,
        metadata: bool = True,
        desired_resolution: Sequence[float] | numpy.ndarray[Any, Any] | None = None,
        random_sample: int | None = None,
        output: Literal["arrow"],
        allow_invalid_root_ids: bool = False,
        allow_missing_lookups: bool = False,
        complete: bool = True,
    ) -> ArrowTable: ...
    @overload
    @classmethod
    def get_all_live(  # pyright: ignore[reportIncompatibleMethodOverride]
        cls,
        timestamp: _When,
        *,
        select_columns: Sequence[_C] | None = None,
        offset: int = 0,
        limit: int | None = None,
        split_positions: bool = False,
        metadata: bool = True,
        desired_resolution: Sequence[float] | numpy.ndarray[Any, Any] | None = None,
        random_sample: int | None = None,
        output: Literal["pandas"] = "pandas",
        allow_invalid_root_ids: bool = False,
        allow_missing_lookups: bool = False,
        complete: bool = True,
    ) -> DataFrame:
        """Every row present at ``timestamp``: ``T().live_query(timestamp, ...)``."""


class _Namespace:
    """Methods shared by Tables and Views."""

    def names(self) -> list[str]: ...
    def find(self, text: str) -> list[str]: ...
    @overload
    def get(self, name: str) -> type[TableFilter] | None: ...
    @overload
    def get(self, name: str, default: _D) -> type[TableFilter] | _D: ...
    def __contains__(self, name: object) -> bool: ...
    def __len__(self) -> int: ...
    def __iter__(self) -> Iterator[str]: ...

class Tables(_Namespace):
    """The tables of datastack 'demo': ``tables.<name>(filters).query()`` or ``tables["<name>"]``."""

    class aibs_metamodel_celltypes_v661(_Table[_Literal["id", "created", "valid", "volume", "bb_end_position", "bb_start_position", "pt_supervoxel_id", "pt_root_id", "pt_position", "id_ref", "created_ref", "valid_ref", "cell_type", "classification_system", "target_id"]]):
        """Table 'aibs_metamodel_celltypes_v661' (schema cell_type_reference), merged with its reference target 'nucleus_detection_v0'

        Synthetic cell-type predictions for nuclei (like aibs_metamodel_celltypes_v661): classification_system is excitatory_neuron, inhibitory_neuron or nonneuron; target_id is the id of a row of nucleus_detection_v0. A few nuclei have two rows.

        Target table 'nucleus_detection_v0': Synthetic nucleus detections (one point per detected nucleus, like minnie65 nucleus_detection_v0). pt is the nucleus centroid; bb_start/bb_end the bounding box where known; volume in um^3. A pt_root_id of 0 means the centroid lies outside the segmentation.

        Build a filter with keyword arguments, then call .query():
          col=value  equality;  col=[a, b]  membership ([] matches nothing);
          col={'>': a, '<=': b}  ranges (integer, float, datetime columns and id);
          col={'!=': x} / {'not in': [...]}  exclusion;  col={'regex': '...'}  string columns;
          P_position_bbox=[[x0, y0, z0], [x1, y1, z1]]  box in the table's voxel units (4×4×40 nm), faces included.

        Columns:
          id: id [nucleus_detection_v0] — annotation id (unique in the table)
          created: datetime [nucleus_detection_v0] — when the annotation was made (UTC)
          volume: float [nucleus_detection_v0] — the volume of the nucleus detected in um^3 (may be null)
          pt_supervoxel_id: supervoxel id [nucleus_detection_v0] — supervoxel id under pt
          pt_root_id: root id [nucleus_detection_v0] — root id (segment) under pt, valid for the queried version or timestamp
          id_ref: id [aibs_metamodel_celltypes_v661] — annotation id (unique in the table)
          created_ref: datetime [aibs_metamodel_celltypes_v661] — when the annotation was made (UTC)
          cell_type: string [aibs_metamodel_celltypes_v661] — Cell type name
          classification_system: string [aibs_metamodel_celltypes_v661] — Classification system followed
          target_id: int [aibs_metamodel_celltypes_v661]
          bb_end_position_bbox: bounding box [nucleus_detection_v0] — box on bb_end_position: high corner of the bounding box
          bb_start_position_bbox: bounding box [nucleus_detection_v0] — box on bb_start_position: low corner of the bounding box
          pt_position_bbox: bounding box [nucleus_detection_v0] — box on pt_position: the centroid of the nucleus, to be linked to the segmentation
        """
        def __init__(
            self,
            *,
            id: int | _Ints | _IdOps | None = None,
            created: _When | _Whens | _WhenOps | None = None,
            volume: float | _Floats | _FloatOps | None = None,
            pt_supervoxel_id: int | _Ints | _IdentOps | None = None,
            pt_root_id: int | _Ints | _IdentOps | None = None,
            id_ref: int | _Ints | _IdOps | None = None,
            created_ref: _When | _Whens | _WhenOps | None = None,
            cell_type: str | _Strs | _StrOps | None = None,
            classification_system: str | _Strs | _StrOps | None = None,
            target_id: int | _Ints | _IntOps | None = None,
            bb_end_position_bbox: _BBox | None = None,
            bb_start_position_bbox: _BBox | None = None,
            pt_position_bbox: _BBox | None = None,
        ) -> None: ...

    class allen_v1_column_types_slanted(_Table[_Literal["id", "created", "valid", "cell_type", "classification_system", "pt_supervoxel_id", "pt_root_id", "pt_position"]]):
        """Table 'allen_v1_column_types_slanted' (schema cell_type_local)

        Synthetic manual cell types of neurons in one cortical column (like allen_v1_column_types_slanted). Positions are stored in nanometres (voxel resolution 1x1x1 nm).

        Build a filter with keyword arguments, then call .query():
          col=value  equality;  col=[a, b]  membership ([] matches nothing);
          col={'>': a, '<=': b}  ranges (integer, float, datetime columns and id);
          col={'!=': x} / {'not in': [...]}  exclusion;  col={'regex': '...'}  string columns;
          P_position_bbox=[[x0, y0, z0], [x1, y1, z1]]  box in the table's voxel units (1×1×1 nm), faces included.

        Columns:
          id: id — annotation id (unique in the table)
          created: datetime — when the annotation was made (UTC)
          cell_type: string — Cell type name
          classification_system: string — Classification system followed
          pt_supervoxel_id: supervoxel id — supervoxel id under pt
          pt_root_id: root id — root id (segment) under pt, valid for the queried version or timestamp
          pt_position_bbox: bounding box — box on pt_position: Location associated with classification
        """
        def __init__(
            self,
            *,
            id: int | _Ints | _IdOps | None = None,
            created: _When | _Whens | _WhenOps | None = None,
            cell_type: str | _Strs | _StrOps | None = None,
            classification_system: str | _Strs | _StrOps | None = None,
            pt_supervoxel_id: int | _Ints | _IdentOps | None = None,
            pt_root_id: int | _Ints | _IdentOps | None = None,
            pt_position_bbox: _BBox | None = None,
        ) -> None: ...

    class nucleus_detection_v0(_Table[_Literal["id", "created", "valid", "volume", "bb_end_position", "bb_start_position", "pt_supervoxel_id", "pt_root_id", "pt_position"]]):
        """Table 'nucleus_detection_v0' (schema nucleus_detection)

        Synthetic nucleus detections (one point per detected nucleus, like minnie65 nucleus_detection_v0). pt is the nucleus centroid; bb_start/bb_end the bounding box where known; volume in um^3. A pt_root_id of 0 means the centroid lies outside the segmentation.

        Build a filter with keyword arguments, then call .query():
          col=value  equality;  col=[a, b]  membership ([] matches nothing);
          col={'>': a, '<=': b}  ranges (integer, float, datetime columns and id);
          col={'!=': x} / {'not in': [...]}  exclusion;  col={'regex': '...'}  string columns;
          P_position_bbox=[[x0, y0, z0], [x1, y1, z1]]  box in the table's voxel units (4×4×40 nm), faces included.

        Columns:
          id: id — annotation id (unique in the table)
          created: datetime — when the annotation was made (UTC)
          volume: float — the volume of the nucleus detected in um^3 (may be null)
          pt_supervoxel_id: supervoxel id — supervoxel id under pt
          pt_root_id: root id — root id (segment) under pt, valid for the queried version or timestamp
          bb_end_position_bbox: bounding box — box on bb_end_position: high corner of the bounding box
          bb_start_position_bbox: bounding box — box on bb_start_position: low corner of the bounding box
          pt_position_bbox: bounding box — box on pt_position: the centroid of the nucleus, to be linked to the segmentation
        """
        def __init__(
            self,
            *,
            id: int | _Ints | _IdOps | None = None,
            created: _When | _Whens | _WhenOps | None = None,
            volume: float | _Floats | _FloatOps | None = None,
            pt_supervoxel_id: int | _Ints | _IdentOps | None = None,
            pt_root_id: int | _Ints | _IdentOps | None = None,
            bb_end_position_bbox: _BBox | None = None,
            bb_start_position_bbox: _BBox | None = None,
            pt_position_bbox: _BBox | None = None,
        ) -> None: ...

    class proofreading_status_and_strategy(_Table[_Literal["id", "created", "valid", "status_axon", "status_dendrite", "strategy_axon", "strategy_dendrite", "valid_id", "pt_supervoxel_id", "pt_root_id", "pt_position"]]):
        """Table 'proofreading_status_and_strategy' (schema compartment_proofread_status_strategy)

        Synthetic proofreading status of neurons (like proofreading_status_and_strategy). valid_id is the root id the neuron had when it was assessed; compare it with pt_root_id to see whether the segment changed since.

        Build a filter with keyword arguments, then call .query():
          col=value  equality;  col=[a, b]  membership ([] matches nothing);
          col={'>': a, '<=': b}  ranges (integer, float, datetime columns and id);
          col={'!=': x} / {'not in': [...]}  exclusion;  col={'regex': '...'}  string columns;
          P_position_bbox=[[x0, y0, z0], [x1, y1, z1]]  box in the table's voxel units (4×4×40 nm), faces included.

        Columns:
          id: id — annotation id (unique in the table)
          created: datetime — when the annotation was made (UTC)
          status_axon: bool — Proofread status of the axon only. True indicates axon is at least clean.
          status_dendrite: bool — Proofread status of the dendrite only. True indicates dendrite is at least clean.
          strategy_axon: string — Strategy used when proofreading axon. See table description for more details.
          strategy_dendrite: string — Strategy used when proofreading dendrite. See table description for more details.
          valid_id: int
          pt_supervoxel_id: supervoxel id — supervoxel id under pt
          pt_root_id: root id — root id (segment) under pt, valid for the queried version or timestamp
          pt_position_bbox: bounding box — box on pt_position: Core location on proofread object
        """
        def __init__(
            self,
            *,
            id: int | _Ints | _IdOps | None = None,
            created: _When | _Whens | _WhenOps | None = None,
            status_axon: bool | _Bools | _BoolOps | None = None,
            status_dendrite: bool | _Bools | _BoolOps | None = None,
            strategy_axon: str | _Strs | _StrOps | None = None,
            strategy_dendrite: str | _Strs | _StrOps | None = None,
            valid_id: int | _Ints | _IntOps | None = None,
            pt_supervoxel_id: int | _Ints | _IdentOps | None = None,
            pt_root_id: int | _Ints | _IdentOps | None = None,
            pt_position_bbox: _BBox | None = None,
        ) -> None: ...

    class synapses_pni_2(_Table[_Literal["id", "created", "valid", "size", "ctr_pt_position", "post_pt_supervoxel_id", "post_pt_root_id", "post_pt_position", "pre_pt_supervoxel_id", "pre_pt_root_id", "pre_pt_position"]]):
        """Table 'synapses_pni_2' (schema synapse)

        Synthetic automated synapse detections (like minnie65 synapses_pni_2). pre_pt and post_pt are bound to the presynaptic and postsynaptic segments, ctr_pt is the cleft centre; size in voxels.

        Build a filter with keyword arguments, then call .query():
          col=value  equality;  col=[a, b]  membership ([] matches nothing);
          col={'>': a, '<=': b}  ranges (integer, float, datetime columns and id);
          col={'!=': x} / {'not in': [...]}  exclusion;  col={'regex': '...'}  string columns;
          P_position_bbox=[[x0, y0, z0], [x1, y1, z1]]  box in the table's voxel units (4×4×40 nm), faces included.

        Columns:
          id: id — annotation id (unique in the table)
          created: datetime — when the annotation was made (UTC)
          size: float — size of synapse (may be null)
          post_pt_supervoxel_id: supervoxel id — supervoxel id under post_pt
          post_pt_root_id: root id — root id (segment) under post_pt, valid for the queried version or timestamp
          pre_pt_supervoxel_id: supervoxel id — supervoxel id under pre_pt
          pre_pt_root_id: root id — root id (segment) under pre_pt, valid for the queried version or timestamp
          ctr_pt_position_bbox: bounding box — box on ctr_pt_position: central point
          post_pt_position_bbox: bounding box — box on post_pt_position: a nearby point located in the postsynaptic compartment of the synapse
          pre_pt_position_bbox: bounding box — box on pre_pt_position: a nearby point located in the presynaptic compartment of the synapse
        """
        def __init__(
            self,
            *,
            id: int | _Ints | _IdOps | None = None,
            created: _When | _Whens | _WhenOps | None = None,
            size: float | _Floats | _FloatOps | None = None,
            post_pt_supervoxel_id: int | _Ints | _IdentOps | None = None,
            post_pt_root_id: int | _Ints | _IdentOps | None = None,
            pre_pt_supervoxel_id: int | _Ints | _IdentOps | None = None,
            pre_pt_root_id: int | _Ints | _IdentOps | None = None,
            ctr_pt_position_bbox: _BBox | None = None,
            post_pt_position_bbox: _BBox | None = None,
            pre_pt_position_bbox: _BBox | None = None,
        ) -> None: ...

    @_overload
    def __getitem__(self, name: _Literal["aibs_metamodel_celltypes_v661"]) -> _type[aibs_metamodel_celltypes_v661]: ...
    @_overload
    def __getitem__(self, name: _Literal["allen_v1_column_types_slanted"]) -> _type[allen_v1_column_types_slanted]: ...
    @_overload
    def __getitem__(self, name: _Literal["nucleus_detection_v0"]) -> _type[nucleus_detection_v0]: ...
    @_overload
    def __getitem__(self, name: _Literal["proofreading_status_and_strategy"]) -> _type[proofreading_status_and_strategy]: ...
    @_overload
    def __getitem__(self, name: _Literal["synapses_pni_2"]) -> _type[synapses_pni_2]: ...

class Views(_Namespace):
    """The views of datastack 'demo': ``views.<name>(filters).query()`` or ``views["<name>"]``."""

    class single_neurons(_Table[_Literal["id", "pt_root_id", "pt_supervoxel_id", "pt_position"]]):
        """View 'single_neurons'

        Nuclei whose segment (root id) carries exactly one nucleus and lies inside the segmentation: one row per single-soma cell.

        Build a filter with keyword arguments, then call .query():
          col=value  equality;  col=[a, b]  membership ([] matches nothing);
          col={'>': a, '<=': b}  ranges (integer, float, datetime columns and id);
          col={'!=': x} / {'not in': [...]}  exclusion;  col={'regex': '...'}  string columns;
          P_position_bbox=[[x0, y0, z0], [x1, y1, z1]]  box in the table's voxel units (4×4×40 nm), faces included.

        Columns:
          id: id
          pt_root_id: root id
          pt_supervoxel_id: supervoxel id
          pt_position_bbox: bounding box — box on pt_position
        """
        def __init__(
            self,
            *,
            id: int | _Ints | _IdOps | None = None,
            pt_root_id: int | _Ints | _IdentOps | None = None,
            pt_supervoxel_id: int | _Ints | _IdentOps | None = None,
            pt_position_bbox: _BBox | None = None,
        ) -> None: ...

    def __getitem__(self, name: _Literal["single_neurons"]) -> _type[single_neurons]: ...
