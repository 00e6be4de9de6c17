"""Notebook completion and help without any generation step, on a real client.

jedi's Interpreter API is what IPython uses for completion; ``client.tables["<TAB>`` is completed
by IPython's own key matcher (``_ipython_key_completions_``), so that case runs IPython's
completer. ``help()`` is pydoc, ``?`` is IPython's inspector.
"""

from __future__ import annotations

import pydoc

import pytest

from tablekit.client import Client
from tablekit.tables import namespace_attribute

jedi = pytest.importorskip("jedi", reason="jedi is in the test extra: pip install '.[test]'")

NUC = "nucleus_detection_v0"
QUERY_OPTIONS = {"select_columns", "offset", "limit", "split_positions", "timestamp", "output"}


def complete(client: Client, code: str) -> list[str]:
    """Names jedi offers at the end of ``code``."""
    return [c.name for c in jedi.Interpreter(code, [{"client": client}]).complete()]


def test_table_names_after_client_tables_dot(client):
    """``client.tables.<TAB>`` lists every table; ``client.views.<TAB>`` every view."""
    names = complete(client, "client.tables.")
    assert set(client.get_tables()) <= set(names)
    assert complete(client, "client.tables.nuc") == [NUC]
    assert complete(client, "client.views.sing") == ["single_neurons"]


def test_table_names_on_a_bound_namespace(client):
    """Completion works on the namespace object itself (``__dir__``)."""
    t = client.tables
    names = [c.name for c in jedi.Interpreter("t.", [{"t": t}]).complete()]
    assert set(client.get_tables()) <= set(names)
    assert "_build" not in names and "find" in names


def test_column_keywords_inside_the_table_call(client):
    """``client.tables.nucleus_detection_v0(<TAB>`` offers the columns as keywords."""
    offered = complete(client, f"client.tables.{NUC}(")
    assert {f"{f}=" for f in client.tables[NUC].fields} <= set(offered)
    assert complete(client, f"client.tables.{NUC}(vol") == ["volume="]
    sigs = jedi.Interpreter(f"client.tables.{NUC}(", [{"client": client}]).get_signatures()
    assert [p.name for p in sigs[0].params] == list(client.tables[NUC].fields)


def test_query_keywords(client):
    """``T(...).query(<TAB>`` offers the query options — the call need not be split in two lines."""
    code = f"client.tables.{NUC}(volume={{'>': 1}}).query("
    assert {f"{o}=" for o in QUERY_OPTIONS} <= set(complete(client, code))
    assert complete(client, code + "sel") == ["select_columns="]
    (sig,) = jedi.Interpreter(code, [{"client": client}]).get_signatures()
    assert sig.name == "query" and QUERY_OPTIONS <= {p.name for p in sig.params}


def test_ipython_completes_names_inside_brackets(client):
    """``client.tables["<TAB>`` in IPython offers every table name."""
    shell_mod = pytest.importorskip("IPython.core.interactiveshell")
    from IPython.core.completer import provisionalcompleter

    shell = shell_mod.InteractiveShell.instance()
    shell.user_ns["client"] = client
    with provisionalcompleter():
        got = [c.text for c in shell.Completer.completions('client.tables["', 15)]
        dotted = [c.text for c in shell.Completer.completions("client.tables.nuc", 17)]
    assert set(client.get_tables()) <= set(got)
    assert NUC in dotted


def test_key_completions_hook(client):
    """The namespaces give IPython every name, including those that are not identifiers."""
    assert client.tables._ipython_key_completions_() == client.get_tables()
    assert client.views._ipython_key_completions_() == client.get_views()


def test_namespace_attribute_is_read_only_and_documented(client):
    """The descriptor behaves like a read-only property."""

    class Holder:
        @namespace_attribute
        def tables(self) -> list[str]:
            """Some names."""
            return ["a"]

    h = Holder()
    assert h.tables == ["a"] and Holder.tables.__doc__ == "Some names."
    with pytest.raises(AttributeError, match="tables is read-only"):
        h.tables = ["b"]  # type: ignore[misc]
    names = [c.name for c in jedi.Interpreter("h.tables.", [{"h": h}]).complete()]
    assert "append" in names  # jedi ran the getter: it sees a list


def test_help_on_a_table_class_shows_signature_and_columns(client):
    """``help(T)``: keyword-only signature, columns with kinds, descriptions and units."""
    cls = client.tables.aibs_metamodel_celltypes_v661
    text = pydoc.render_doc(cls, renderer=pydoc.plaintext)
    assert "aibs_metamodel_celltypes_v661(*, id: " in text
    assert "volume: float [nucleus_detection_v0] — the volume of the nucleus detected in um^3" in text
    assert "pt_root_id: root id [nucleus_detection_v0]" in text
    assert "cell_type: string [aibs_metamodel_celltypes_v661]" in text
    assert "box in the table's voxel units (4×4×40 nm)" in text


def test_question_mark_on_a_table_class(client):
    """IPython's ``client.tables.T?`` shows the signature and the column descriptions."""
    shell_mod = pytest.importorskip("IPython.core.interactiveshell")
    shell = shell_mod.InteractiveShell.instance()
    shell.user_ns["client"] = client
    info = shell.object_inspect(f"client.tables.{NUC}")
    assert info["found"]
    assert "volume: float — the volume of the nucleus detected in um^3" in info["docstring"]
    assert "pt_position_bbox" in (info.get("init_definition") or info.get("definition") or "")


def test_help_on_query_of_a_filter_object(client):
    """``help(T(...).query)`` and jedi's signature help show the real query signature."""
    f = client.tables[NUC](volume={">": 1})
    text = pydoc.render_doc(f.query, renderer=pydoc.plaintext)
    assert "query(*, select_columns:" in text and "output: 'str' = 'pandas'" in text
    (d,) = jedi.Interpreter("f.query", [{"f": f}]).infer()
    assert "Run the query" in d.docstring() and "select_columns" in d.docstring()


def test_help_on_query_lists_the_columns(client):
    """``help(T(...).query)`` also lists the table's columns."""
    f = client.tables[NUC](volume={">": 1})
    assert "the volume of the nucleus detected in um^3" in (f.query.__doc__ or "")
