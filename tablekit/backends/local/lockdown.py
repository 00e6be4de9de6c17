"""DuckDB connections that can read only what they are given, and checks of a view's SQL.

Every DuckDB connection tablekit opens runs with external access off: it may read (and, for the
native copies, attach) files only under the directories it is given — the datastack directory
and the native-copy cache — never load or install an extension, and its configuration is locked
so that no later statement can widen that (:func:`lock_down`). A view's SQL comes from a file of
the datastack directory, so it is also checked before it runs (:func:`view_sql_problem`): one
``SELECT`` over the datastack's tables (or plain names, which may be tables of other versions), with no table functions (``read_text``, ``read_csv``,
``glob``…), no file paths, catalogs or schemas, no parameters and no functions that read the
engine's settings. Either defence alone refuses ``read_text('/etc/hostname')``.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Iterator
from typing import Any

import duckdb

__all__ = ["lock_down", "view_sql_problem"]

#: settings that keep a connection to the files it was given (DuckDB 2.x names)
_LOCKED = (
    "SET autoinstall_known_extensions = false",
    "SET autoload_known_extensions = false",
    "SET allow_community_extensions = false",
    "SET enable_external_access = false",
    "SET lock_configuration = true",
)
#: scalar functions a view may not call: they read the engine's configuration or variables
_DENIED_FUNCTIONS = frozenset({"current_setting", "getvariable", "getenv"})
#: a name that may be a table of another version (the view is then left out of this one's views);
#: anything else unknown — a path, a DuckDB or SQLite catalog table — is refused
_PLAIN_NAME = re.compile(r"[a-z_][a-z0-9_]*", re.IGNORECASE)
_SYSTEM_PREFIXES = ("duckdb_", "sqlite_", "pg_", "information_schema")
#: FROM-clause node types a view may use
_FROM_TYPES = frozenset({"BASE_TABLE", "JOIN", "SUBQUERY", "EXPRESSION_LIST", "EMPTY_FROM", "EMPTY", "PIVOT"})


def lock_down(con: duckdb.DuckDBPyConnection, allowed: Iterable[str | os.PathLike[str]]) -> None:
    """Limit ``con`` to the directories ``allowed`` (and DuckDB's own temporary directory): no
    other file can be read, written or attached, no extension loaded or installed, and no
    setting changed afterwards. Call it once the connection's own settings are made."""
    dirs = []
    for d in allowed:
        text = os.path.abspath(os.fspath(d))
        dirs.append(text if text.endswith(os.sep) else text + os.sep)
    con.execute("SET allowed_directories = ?", [dirs])
    for stmt in _LOCKED:
        con.execute(stmt)


def _nodes(tree: Any) -> Iterator[dict[str, Any]]:
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            yield node
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


def view_sql_problem(con: duckdb.DuckDBPyConnection, sql: str, tables: Iterable[str]) -> str | None:
    """``None`` when ``sql`` is one ``SELECT`` that reads only ``tables`` (and its own CTEs),
    else what is wrong with it, naming the offending part."""
    text = sql.strip().rstrip(";").strip()
    try:
        statements = con.extract_statements(text)
    except duckdb.Error as e:
        return f"it does not parse ({str(e).strip().splitlines()[0]})"
    if len(statements) != 1:
        return f"it holds {len(statements)} statements; a view is one SELECT"
    if statements[0].type != duckdb.StatementType.SELECT:
        kind = statements[0].type.name
        return f"it is {'an' if kind[0] in 'AEIOU' else 'a'} {kind} statement, not a SELECT; a view is one SELECT"
    tree = json.loads(con.execute("SELECT json_serialize_sql(?)", [text]).fetchone()[0])  # type: ignore[index]
    if tree.get("error"):
        return f"it is not a plain SELECT ({tree.get('error_message')})"
    nodes = list(_nodes(tree))
    ctes = {
        str(entry.get("key")).lower()
        for n in nodes
        if isinstance(n.get("cte_map"), dict)
        for entry in n["cte_map"].get("map", [])
    }
    known = {t.lower() for t in tables} | ctes
    for n in nodes:
        kind, cls = n.get("type"), n.get("class")
        if "table_name" in n and kind == "BASE_TABLE":
            name = str(n.get("table_name"))
            if n.get("schema_name") or n.get("catalog_name"):
                qual = ".".join(p for p in (n.get("catalog_name"), n.get("schema_name"), name) if p)
                return f"it reads {qual!r}; a view reads the datastack's tables by their plain names"
            plain = _PLAIN_NAME.fullmatch(name) and not name.lower().startswith(_SYSTEM_PREFIXES)
            if name.lower() not in known and not plain:
                return (
                    f"it reads {name!r}, which is not a table of the datastack; a view reads only its "
                    f"tables ({', '.join(sorted(tables)) or 'none'})"
                )
        elif kind == "TABLE_FUNCTION":
            fn = (n.get("function") or {}).get("function_name", "?")
            return f"it calls the table function {fn}(); a view may read only the datastack's tables"
        elif "query_location" in n and kind in ("SHOW_REF", "COLUMN_DATA", "DELIM_GET", "CTE"):
            return f"it uses {kind}; a view is a plain SELECT over the datastack's tables"
        elif cls == "FUNCTION" and str(n.get("function_name", "")).lower() in _DENIED_FUNCTIONS:
            return f"it calls {n['function_name']}(), which reads the engine's settings"
        elif cls == "PARAMETER":
            return "it has a query parameter; a view's SQL holds its values literally"
        elif (
            "from_table" in n
            and isinstance(n["from_table"], dict)
            and n["from_table"].get("type") not in _FROM_TYPES
        ):
            src = n["from_table"]
            if src.get("type") == "TABLE_FUNCTION":
                fn = (src.get("function") or {}).get("function_name", "?")
                return f"it calls the table function {fn}(); a view may read only the datastack's tables"
            return f"its FROM clause uses {src.get('type')}; a view is a plain SELECT over the datastack's tables"
    return None
