"""Write Delta Lake exports with MaterializationEngine's own export functions (issue 18).

Run in the *service's* virtual environment (tests/_real_server.py builds it)::

    <server venv>/bin/python tests/realserver_delta_export.py CLUSTER_URI DATASTACK VERSION OUT N_PARTITIONS

It does what the service's Celery task ``write_deltalake_table`` does for each table and view of
the frozen database ``{DATASTACK}__mat{VERSION}``, without Celery or Redis: the output specs from
``discover_default_output_specs`` (tables: from their indexes) or ``discover_view_output_specs``
(views), the partition count (``N_PARTITIONS`` for every lake of a table of 1000 rows or more, so that a small
test table has several; the task's small-table trim to one lake is left out for the same reason), the bounds
from ``resolve_all_bounds``, then ``export_table_to_deltalake`` / ``export_view_to_deltalake``
into ``OUT/{DATASTACK}/v{VERSION}/{table}``. Prints one JSON line: the lakes written.
"""

from __future__ import annotations

import json
import os
import sys
import warnings

warnings.filterwarnings("ignore")
os.environ.setdefault("QUEUE_LENGTH_LIMIT", "10000")
os.environ.setdefault("AUTH_DISABLED", "true")
os.environ.setdefault("NO_GCE_CHECK", "true")

from materializationengine.workflows import deltalake_export as dx  # noqa: E402
from sqlalchemy import create_engine, inspect, text  # noqa: E402
from sqlalchemy.pool import NullPool  # noqa: E402


def main() -> None:
    cluster, datastack, version, out, n = (
        sys.argv[1],
        sys.argv[2],
        int(sys.argv[3]),
        sys.argv[4],
        int(sys.argv[5]),
    )
    conn = f"{cluster.rpartition('/')[0]}/{datastack}__mat{version}"
    engine = create_engine(conn, poolclass=NullPool)
    insp = inspect(engine)
    with engine.connect() as c:  # the annotation tables of the version, as the service lists them
        listed = {r[0] for r in c.execute(text("SELECT table_name FROM materializedmetadata"))}
    tables = [t for t in insp.get_table_names() if t in listed]
    postgis = {"geography_columns", "geometry_columns", "raster_columns", "raster_overviews"}
    views = [v for v in insp.get_view_names() if v not in postgis]
    report: dict = {"tables": {}, "views": {}}
    for table in tables:
        source = dx.TableSource(annotation_table=table)
        specs = dx.discover_default_output_specs(source, engine)
        with engine.connect() as c:
            rows = c.execute(text(f'SELECT count(*) FROM "{table}"')).scalar()
        for spec in specs:
            # the service's own count for small tables is 1: N only where it cannot produce duplicate
            # breakpoints (polars' cut refuses them: the writer fails on a column with fewer
            # distinct values than partitions)
            spec.n_partitions = n if rows >= 1000 else 1
        dx.resolve_all_bounds(specs, conn, table)
        base = f"{out}/{datastack}/v{version}/{table}"
        dx.export_table_to_deltalake(conn, source, specs, base)
        report["tables"][table] = [s.name for s in specs]
    for view in views:
        source = dx.TableSource(annotation_table=view)
        specs = dx.discover_view_output_specs(source, conn)
        for spec in specs:
            if spec.partition_by is not None:
                spec.n_partitions = n
        base = f"{out}/{datastack}/v{version}/{view}"
        rows = dx.export_view_to_deltalake(conn, view, specs, base)
        report["views"][view] = {"lakes": [s.name for s in specs], "rows": rows}
    print(json.dumps(report))


if __name__ == "__main__":
    main()
