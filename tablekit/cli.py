"""The ``tablekit`` command (also ``python -m tablekit``).

tablekit demo                                   guided tour of the demo datastack
tablekit sample --out DIR [--synapses N]        write a synthetic datastack
tablekit tables [--path DIR] [--version V]      list tables
tablekit query TABLE --where 'volume>500' …     query a table, CSV or Parquet out
tablekit export DATASTACK --version V --out DIR  write a version as CAVE's Delta Lake exports
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections.abc import Sequence
from typing import Any

from .errors import DatastackError, TablekitError
from .query.options import option_fields

_WHERE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(==|!=|>=|<=|=|>|<|~)\s*(.*?)\s*$")


def _connect(args: argparse.Namespace) -> Any:
    """The client ``tablekit.connect`` gives for these options: a local datastack (``--path`` or the
    demo) or a CAVE deployment (``--server URL --datastack NAME``), the token resolved as
    ``connect`` resolves it (``--token``, else ``$CAVE_TOKEN``, else CAVEclient's secret files)."""
    import tablekit

    if args.server is None:
        if args.token is not None or args.datastack is not None:
            given = "--token" if args.token is not None else "--datastack"
            raise DatastackError(f"{given} is for a server: add --server URL (or leave {given} out)")
        return tablekit.connect(path=args.path, version=args.version)
    if args.path is not None:
        raise DatastackError("give either --path (a local datastack) or --server URL, not both")
    if not args.datastack:
        raise DatastackError(f"--server {args.server}: name the datastack too: --datastack NAME")
    return tablekit.connect(args.datastack, server=args.server, token=args.token, version=args.version)


# Advice the library words for Python callers, in the words of this command.
_CLI_ADVICE = (
    (re.compile(r"pass overwrite=True to replace it"), "add --overwrite to replace it"),
    (re.compile(r"pass token=\.\.\., set"), "pass --token TOKEN, set"),
    (
        re.compile(
            r"(?:list (?:them|the (?:table|view)s) with )?list\(client\.(?:table|view)s\)"
            r"(?: or search with client\.(?:table|view)s\.find\('\.\.\.'\))?"
        ),
        "list them with `tablekit tables`",
    ),
)


def _cli_words(text: str) -> str:
    for pattern, words in _CLI_ADVICE:
        text = pattern.sub(words, text)
    return text


def _parse_value(field: Any, text: str) -> Any:
    from .schema import ColumnKind

    kind = field.column.kind
    if kind is ColumnKind.INT:
        try:
            return int(text)
        except ValueError:
            try:
                return float(text)  # let the filter say why a float is wrong here
            except ValueError:
                return text
    if kind is ColumnKind.FLOAT:
        try:
            return float(text)
        except ValueError:
            return text
    if kind is ColumnKind.BOOL:
        low = text.lower()
        return {"true": True, "t": True, "1": True, "false": False, "f": False, "0": False}.get(low, text)
    return text


def _box_number(cls: Any, where: str, col: str, text: str) -> int | float:
    """One coordinate of a ``--where`` box: an int, or a float (``1e3``, ``2.5``)."""
    from .errors import FilterValueError

    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        raise FilterValueError(
            f"{cls.table_name}: --where {where!r}: {text.strip()!r} is not a number; a box needs six numbers "
            f"x0,y0,z0,x1,y1,z1, e.g. --where '{col}=0,0,0,1000,1000,100'",
            table=cls.table_name,
            column=col,
        ) from None


def _table_class(client: Any, name: str) -> Any:
    """The filter class of a table or view of that name; an unknown name is refused with the close
    matches among both."""
    import difflib

    from ._values import short
    from .errors import UnknownTableError

    if name in client.tables:
        return client.tables[name]
    if name in client.views:
        return client.views[name]
    names = [*client.tables, *client.views]
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.6)
    hint = f" Did you mean {' or '.join(map(repr, close))}?" if close else ""
    raise UnknownTableError(
        f"{client.datastack} v{client.version}: no table or view named {short(name)}.{hint} "
        "List them with `tablekit tables`"
    )


def _check_out(out: str | None) -> str | None:
    """Why ``--out`` cannot be written (its directory is missing), or None."""
    import os

    if not out:
        return None
    parent = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(parent):
        return f"--out {out}: the directory {parent} does not exist; create it first, or write elsewhere"
    return None


def _where_kwargs(cls: Any, wheres: Sequence[str]) -> dict[str, Any]:
    """``['volume>500', 'pt_root_id=1,2', 'pt_position_bbox=0,0,0,10,10,10']`` → filter kwargs."""
    from .errors import FilterValueError, UnknownColumnError
    from .filters import introspect

    kw: dict[str, Any] = {}
    for w in wheres:
        m = _WHERE.match(w)
        if not m:
            raise FilterValueError(
                f"{cls.table_name}: cannot read --where {w!r}. Write COLUMN OP VALUE with OP one of "
                "= != > >= < <= ~ (regex); a comma list means membership, e.g. --where 'pt_root_id=1,2'"
            )
        col, op, text = m.groups()
        fields = introspect(cls).fields
        if col not in fields:
            cls(**{col: None})  # raises the UnknownColumnError with suggestions
            raise UnknownColumnError(f"{cls.table_name}: no column {col!r}")  # pragma: no cover
        field = fields[col]
        if field.bbox:
            if op not in ("=", "=="):
                raise FilterValueError(
                    f"{cls.table_name}: --where {w!r}: a box is given with '=', not {op!r} (it keeps the rows "
                    f"inside it, faces included): --where '{col}=x0,y0,z0,x1,y1,z1'",
                    table=cls.table_name,
                    column=col,
                )
            nums = [_box_number(cls, w, col, x) for x in text.split(",")]
            if len(nums) != 6:
                raise FilterValueError(
                    f"{cls.table_name}: --where {w!r}: a box needs six numbers x0,y0,z0,x1,y1,z1, got {len(nums)}",
                    table=cls.table_name,
                    column=col,
                )
            kw[col] = [nums[:3], nums[3:]]
            continue
        parts = (
            [_parse_value(field, t) for t in text.split(",")]
            if "," in text and op in ("=", "==", "!=")
            else None
        )
        ops = kw.setdefault(col, {})
        if op in ("=", "=="):
            ops["in" if parts is not None else "=="] = (
                parts if parts is not None else _parse_value(field, text)
            )
        elif op == "!=":
            ops["not in" if parts is not None else "!="] = (
                parts if parts is not None else _parse_value(field, text)
            )
        elif op == "~":
            ops["regex"] = text
        else:
            ops[op] = _parse_value(field, text)
    return kw


def _cmd_query(args: argparse.Namespace) -> int:
    bad_out = _check_out(args.out)
    if bad_out:
        print(f"error: {bad_out}", file=sys.stderr)
        return 2
    client = _connect(args)
    cls = _table_class(client, args.table)
    f = cls(**_where_kwargs(cls, args.where or []))
    select = args.select.split(",") if args.select else None
    if args.explain:
        print(f.explain(select_columns=select, limit=args.limit, offset=args.offset))
        return 0
    df = f.query(
        select_columns=select, limit=args.limit, offset=args.offset, split_positions=True, metadata=False
    )
    fmt = _out_format(args)
    if fmt == "table" and not args.out:
        import pandas as pd

        with pd.option_context("display.width", 200, "display.max_columns", 30):
            print(df.to_string(max_rows=args.limit or 50))
        print(f"[{len(df)} rows]")
        return 0
    if fmt == "parquet" and not args.out:
        print("error: --format parquet needs --out FILE", file=sys.stderr)
        return 2
    if not args.out:
        sys.stdout.write(df.to_csv(index=False))
        return 0
    try:
        if fmt == "parquet":
            df.to_parquet(args.out, index=False)
        elif fmt == "table":  # every row, as the terminal would show them
            with open(args.out, "w") as fh:
                fh.write(df.to_string(index=False) + "\n")
        else:
            with open(args.out, "w") as fh:
                fh.write(df.to_csv(index=False))
    except OSError as e:  # a file that cannot be written: say which, without a traceback
        print(
            f"error: --out {args.out}: cannot write it ({e.strerror or e}); check the path", file=sys.stderr
        )
        return 2
    print(f"wrote {len(df)} rows to {args.out}", file=sys.stderr)
    return 0


def _out_format(args: argparse.Namespace) -> str:
    """``--format``, or without it: from ``--out``'s suffix (.parquet, .csv; anything else gets the
    table as text), and the table on the terminal without ``--out``."""
    if args.format is not None:
        return str(args.format)
    suffix = (args.out or "").lower().rsplit(".", 1)[-1] if args.out and "." in args.out else ""
    return {"parquet": "parquet", "pq": "parquet", "csv": "csv"}.get(suffix, "table")


def _cmd_tables(args: argparse.Namespace) -> int:
    client = _connect(args)
    print(f"datastack {client.datastack}, version {client.version} ({client.timestamp:%Y-%m-%d %H:%M} UTC)")
    for name in client.get_tables():
        meta = client.get_table_metadata(name)
        ref = f" → {meta['reference_table']}" if meta.get("reference_table") else ""
        print(f"  {name:<40} {client.get_annotation_count(name):>12,} rows  {meta['schema_type']}{ref}")
    for name in client.get_views():
        print(f"  {name:<40} {'(view)':>17}")
    return 0


def _cmd_sample(args: argparse.Namespace) -> int:
    import os

    from .datastack.sample import build_sample

    if not args.overwrite and os.path.isdir(args.out) and os.listdir(args.out):
        print(
            f"error: --out {args.out} exists and is not empty; add --overwrite to replace it", file=sys.stderr
        )
        return 2
    t0 = time.perf_counter()
    path = build_sample(args.out, synapses=args.synapses, seed=args.seed, overwrite=args.overwrite)
    print(f"wrote datastack to {path} in {time.perf_counter() - t0:.1f} s")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from .backends.delta import export_delta

    t0 = time.perf_counter()
    vdir = export_delta(
        args.datastack,
        args.out,
        version=args.version,
        path=args.path,
        tables=args.table,
        small_table_mb=args.small_table_mb,
        n_partitions=args.partitions,
        overwrite=args.overwrite,
        progress=(lambda msg: print(msg, file=sys.stderr)) if args.progress else None,
    )
    print(
        f"wrote the Delta Lake export of {args.datastack} v{args.version} to {vdir} in {time.perf_counter() - t0:.1f} s"
    )
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(path=args.path)
    return 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tablekit", description="Query versioned connectomics annotation tables."
    )
    sub = p.add_subparsers(dest="command", required=True)

    p.add_argument("-V", "--version", action="version", version=f"tablekit {_package_version()}")

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--path", help="local datastack directory (default: the embedded demo)")
        sp.add_argument(
            "--server",
            metavar="URL",
            help="a CAVE deployment's global server (or a `tablekit serve` URL) instead of a local datastack",
        )
        sp.add_argument("--datastack", metavar="NAME", help="the datastack to read on --server")
        sp.add_argument(
            "--token",
            help="the CAVE token for --server (default: $CAVE_TOKEN, else CAVEclient's secret files "
            "~/.cloudvolume/secrets/*cave-secret.json); never printed",
        )
        sp.add_argument("--version", type=int, help="materialization version (default: latest valid)")

    d = sub.add_parser("demo", help="a short guided run on the demo datastack, printing real results")
    d.add_argument("--path", help="datastack directory (default: the embedded demo)")
    d.set_defaults(func=_cmd_demo)

    s = sub.add_parser("sample", help="write a deterministic synthetic datastack")
    s.add_argument("--out", required=True, help="output directory")
    s.add_argument("--synapses", type=int, default=200_000, help="number of synapses (default 200000)")
    s.add_argument("--seed", type=int, default=0, help="random seed of the generated data (default 0)")
    s.add_argument("--overwrite", action="store_true", help="replace an existing directory")
    s.set_defaults(func=_cmd_sample)

    e = sub.add_parser("export", help="write a version of a local datastack as CAVE's Delta Lake exports")
    e.add_argument("datastack", help="the datastack's name (demo: the embedded one unless --path)")
    e.add_argument("--path", help="local datastack directory (default: the embedded demo)")
    e.add_argument("--version", type=int, required=True, help="the materialization version to export")
    e.add_argument(
        "--out", required=True, help="base directory: lakes go to OUT/DATASTACK/vVERSION/TABLE/LAKE"
    )
    e.add_argument(
        "--table", action="append", help="export only this table (repeatable; views are then left out)"
    )
    e.add_argument(
        "--small-table-mb",
        type=float,
        default=200,
        help="tables smaller than this get the id lake only, as the service does (default 200; 0: every lake)",
    )
    e.add_argument(
        "--partitions", type=int, help="partitions per lake (default: the service's, size / 256 MB)"
    )
    e.add_argument("--overwrite", action="store_true", help="replace an existing export of that version")
    e.add_argument("--progress", action="store_true", help="print each lake as it is written")
    e.set_defaults(func=_cmd_export)

    t = sub.add_parser("tables", help="list tables and views")
    common(t)
    t.set_defaults(func=_cmd_tables)

    q = sub.add_parser("query", help="query a table or view")
    q.add_argument("table", help="the table or view to query (see `tablekit tables`)")
    common(q)
    q.add_argument("--where", action="append", help="filter COLUMN OP VALUE, e.g. 'volume>500' (repeatable)")
    opt = option_fields()  # the help of each query option comes from its one definition
    q.add_argument("--select", help=opt["select_columns"].metadata["cli"])
    q.add_argument("--limit", type=int, help=opt["limit"].metadata["cli"])
    q.add_argument("--offset", type=int, default=0, help=opt["offset"].metadata["cli"] + " (default 0)")
    q.add_argument(
        "--format",
        choices=["table", "csv", "parquet"],
        help="output format (default: from --out's suffix: .csv, .parquet, else the table as text; "
        "without --out, the table on the terminal)",
    )
    q.add_argument("--out", metavar="FILE", help="write the rows to FILE (every row) instead of the terminal")
    q.add_argument("--explain", action="store_true", help="show what would run, without running it")
    q.set_defaults(func=_cmd_query)
    from .stubgen import add_stubs_command

    add_stubs_command(sub)
    from .server import add_serve_command

    add_serve_command(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``tablekit`` command."""
    args = _parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except TablekitError as e:
        print(f"error: {_cli_words(str(e))}", file=sys.stderr)
        return 2


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("tablekit")
    except PackageNotFoundError:  # pragma: no cover - a source tree that was never installed
        return "unknown"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
