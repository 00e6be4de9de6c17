"""The public surface of ``tablekit``: a sorted ``__all__`` of importable, documented names."""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

import tablekit

ROOT = Path(__file__).resolve().parent.parent


def test_all_is_sorted_and_unique():
    """``__all__`` is sorted (ASCII order, as ruff's RUF022 sorts it) and has no duplicates."""
    assert list(tablekit.__all__) == sorted(set(tablekit.__all__))


#: the public names, written out: a name added to or dropped from ``__all__`` fails here first
PUBLIC = [
    "AuthError", "CAVEclient", "Client", "ConnectionFailedError", "DatastackError", "FilterError", "FilterInfo",
    "FilterValueError", "HTTPError", "IncompleteResultError", "OperatorError", "OutputOptions",
    "Predicate", "Query", "QueryError", "QueryOptions",
    "RateLimitError", "RequestTimeoutError", "SchemaError", "ServerError", "StaleStubsWarning",
    "TableFilter", "TableSource", "TablekitError", "UnknownArgumentError", "UnknownColumnError",
    "UnknownTableError", "UnsupportedError", "VersionError", "__version__", "build_datastack",
    "check_stubs", "connect", "export_delta", "introspect", "provenance",
]  # fmt: skip


def test_every_name_is_importable():
    """``__all__`` is exactly the expected list; each name is an attribute of the package and
    survives ``from tablekit import``."""
    assert list(tablekit.__all__) == PUBLIC
    ns: dict[str, object] = {}
    exec(f"from tablekit import {', '.join(PUBLIC)}", ns)
    for name in PUBLIC:
        assert ns[name] is getattr(tablekit, name)


def test_every_public_name_is_documented():
    """Every exported function and class has a docstring of its own (not one inherited)."""
    missing = []
    for name in tablekit.__all__:
        obj = getattr(tablekit, name)
        if name.startswith("__"):
            continue
        own = obj.__dict__.get("__doc__") if inspect.isclass(obj) else obj.__doc__
        if not (own or "").strip():
            missing.append(name)
    assert not missing, f"undocumented: {missing}"


def test_version_is_the_distribution_version():
    """``tablekit.__version__`` matches pyproject.toml."""
    text = (ROOT / "pyproject.toml").read_text()
    assert f'version = "{tablekit.__version__}"' in text


def test_py_typed_ships():
    """PEP 561: the package is marked typed, and the marker is package data."""
    pkg = Path(importlib.import_module("tablekit").__file__).parent
    assert (pkg / "py.typed").is_file()
    assert 'tablekit = ["py.typed"' in (ROOT / "pyproject.toml").read_text()


#: each error and the builtins it refines (besides Exception), written out from design §7
BUILTINS: dict[str, tuple[type[BaseException], ...]] = {
    "TablekitError": (),
    "SchemaError": (ValueError,),
    "FilterError": (),
    "UnknownColumnError": (TypeError,),
    "FilterValueError": (ValueError,),
    "OperatorError": (ValueError,),
    "UnknownTableError": (KeyError, AttributeError),
    "QueryError": (ValueError,),
    "UnknownArgumentError": (ValueError, TypeError),
    "VersionError": (ValueError,),
    "UnsupportedError": (NotImplementedError,),
    "DatastackError": (ValueError,),
    "HTTPError": (),
    "ConnectionFailedError": (ConnectionError,),
    "RequestTimeoutError": (TimeoutError,),
    "AuthError": (PermissionError,),
    "RateLimitError": (),
    "ServerError": (),
    "IncompleteResultError": (),
}


def test_error_classes_are_exported_with_their_builtins():
    """Every error of tablekit.errors is public and also exactly the builtins it refines (design §7)."""
    from tablekit import errors

    assert sorted(errors.__all__) == sorted(BUILTINS)
    generic = {object, BaseException, Exception}
    for name, expected in BUILTINS.items():
        assert name in tablekit.__all__
        cls = getattr(tablekit, name)
        assert issubclass(cls, tablekit.TablekitError)
        found = {b for b in cls.__mro__ if b.__module__ == "builtins"} - generic
        assert found == {b for e in expected for b in e.__mro__} - generic, name
