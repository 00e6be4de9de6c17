"""Wrong uses of the demo stubs, one per line marked ``# E:``.

A marker reads ``# E: <what> | pyright: <message part> | mypy: <message part>``:
tests/test_typing.py asserts that each checker reports an error on exactly the marked lines, with
a message containing that part. Type-checked only, never run.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, cast

import tablekit

if TYPE_CHECKING:
    from tablekit_stubs import demo  # pyright: ignore[reportMissingModuleSource]

client = tablekit.connect()
tables = cast("demo.Tables", client.tables)
views = cast("demo.Views", client.views)
nuc = tables.nucleus_detection_v0
ct = tables.aibs_metamodel_celltypes_v661
f = nuc(volume={">": 500})
when = dt.datetime(2025, 3, 1, tzinfo=dt.timezone.utc)

# One mistake per line, its expectation beside it (kept on one line: no formatting).
# fmt: off
nuc(cell_type="5P-IT")  # E: unknown column | pyright: No parameter named "cell_type" | mypy: Unexpected keyword argument "cell_type"
_ = tables.nucleus_detecton_v0  # E: misspelled table | pyright: Cannot access attribute "nucleus_detecton_v0" for class "Tables" | mypy: "Tables" has no attribute "nucleus_detecton_v0"; maybe "nucleus_detection_v0"?
_ = tables["nucleus_detecton_v0"]  # E: misspelled table | pyright: No overloads for "__getitem__" match the provided arguments | mypy: No overload variant of "__getitem__" of "Tables" matches argument type "str"
_ = views.single_neuron  # E: misspelled view | pyright: Cannot access attribute "single_neuron" for class "Views" | mypy: "Views" has no attribute "single_neuron"; maybe "single_neurons"?
nuc(volume="large")  # E: str for a numeric column | pyright: Argument of type "Literal['large']" cannot be assigned to parameter "volume" | mypy: Argument "volume" has incompatible type "str"
nuc(volume={">": "500"})  # E: str bound of a numeric range | pyright: Argument of type "dict[str, str]" cannot be assigned to parameter "volume" | mypy: Argument "volume" has incompatible type "dict[str, str]"
ct(cell_type={">": "5P"})  # E: inequality on a string column | pyright: Argument of type "dict[str, str]" cannot be assigned to parameter "cell_type" | mypy: incompatible type "dict[str, str]"; expected "str | Sequence[str]
nuc(pt_root_id={">": 5})  # E: inequality on a root id | pyright: Argument of type "dict[str, int]" cannot be assigned to parameter "pt_root_id" | mypy: Argument "pt_root_id" has incompatible type "dict[str, int]"
nuc(id=1.5)  # E: float for an id | pyright: Argument of type "float" cannot be assigned to parameter "id" | mypy: Argument "id" has incompatible type "float"
nuc(pt_position_bbox=((0, 0), (1, 1)))  # E: wrong bbox shape | pyright: Argument of type "tuple[tuple[int, int], tuple[int, int]]" cannot be assigned to parameter "pt_position_bbox" | mypy: Argument "pt_position_bbox" has incompatible type "tuple[tuple[int, int], tuple[int, int]]"
nuc(pt_position_bbox=[0, 0, 0, 10, 10, 10])  # E: flat bbox | pyright: Argument of type "list[int]" cannot be assigned to parameter "pt_position_bbox" | mypy: Argument "pt_position_bbox" has incompatible type "list[int]"
f.live_query()  # E: missing timestamp in live_query | pyright: No overloads for "live_query" match the provided arguments | mypy: All overload variants of "live_query" of "_Table" require at least one argument
f.query(limt=3)  # E: unknown query() keyword | pyright: No overloads for "query" match the provided arguments | mypy: Unexpected keyword argument "limt" for overloaded function "query" of "_Table"; did you mean "limit"?
f.query(select_columns=["volumes"])  # E: unknown select column | pyright: "Literal['volumes']" is not assignable to type "Literal['id', | mypy: List item 0 has incompatible type "Literal['volumes']"
f.query(output="polars")  # E: unknown output | pyright: No overloads for "query" match the provided arguments | mypy: No overload variant of "query" of "_Table" matches argument type "str"
nuc(1)  # E: positional filter | pyright: Expected 0 positional arguments | mypy: Too many positional arguments
# fmt: on
