"""Write and materialize *datastack directories* (the format in ``docs/datastack-format.md``).

Three layers, from low to high:

* **Writers** — :func:`write_datastack_json`, :func:`write_schemas`, :func:`write_versions`,
  :func:`write_table_metadata`, :func:`write_annotations`, :func:`write_segmentation_history`,
  :func:`write_view`. They write exactly the on-disk contract. Parquet writers take a table or an
  *iterator* of Arrow tables / record batches / DataFrames and stream them to disk in row groups
  of about a million rows, so tables far larger than memory can be written.
* :func:`materialize` — rebuilds ``versions/<v>/<table>/`` snapshots from the annotation history
  and the segmentation history, one row group at a time (memory does not grow with table size).
* :func:`build_datastack` + :class:`TableSource` — build a whole datastack (one version) from
  DataFrames or Parquet files in CAVE's flat-column layout, with thorough input validation.

Modules: :mod:`.format` (the format: name, version, file names, schemas, the JSON files),
:mod:`.parts` (Parquet writers), :mod:`.materialize`, :mod:`.ingest` (:class:`TableSource`, input
checks), :mod:`.build` (:func:`build_datastack`), :mod:`.checksums`, :mod:`.sample` (the synthetic
datastack).

Example::

    import tablekit
    from tablekit.datastack import TableSource

    path = tablekit.build_datastack(
        "my_stack",
        [TableSource("nuclei", "nucleus_detection", nuclei_df),
         TableSource("cell_types", "cell_type_reference", types_df, reference_table="nuclei")],
        name="my_stack", soma_table="nuclei",
    )
    client = tablekit.connect(path=path)
"""

from .build import build_datastack, check_views, replacing_directory
from .format import (
    FORMAT,
    FORMAT_VERSION,
    SEGMENTATION_SCHEMA,
    annotation_schema,
    bundled_schemas,
    check_datastack_name,
    format_timestamp,
    load_table_specs,
    parse_timestamp,
    read_datastack_json,
    read_schemas,
    read_versions,
    snapshot_schema,
    table_metadata,
    version_metadata,
    write_datastack_json,
    write_schemas,
    write_table_metadata,
    write_versions,
    write_view,
)
from .ingest import TableSource
from .materialize import materialize
from .parts import write_annotations, write_segmentation_history

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "SEGMENTATION_SCHEMA",
    "TableSource",
    "annotation_schema",
    "build_datastack",
    "bundled_schemas",
    "check_datastack_name",
    "check_views",
    "format_timestamp",
    "load_table_specs",
    "materialize",
    "parse_timestamp",
    "read_datastack_json",
    "read_schemas",
    "read_versions",
    "replacing_directory",
    "snapshot_schema",
    "table_metadata",
    "version_metadata",
    "write_annotations",
    "write_datastack_json",
    "write_schemas",
    "write_segmentation_history",
    "write_table_metadata",
    "write_versions",
    "write_view",
]
