"""CAVE's Delta Lake exports: the writer (``tablekit export``, :func:`export_delta`) and, in
:mod:`tablekit.backends.delta.backend`, the reader. Needs the ``delta`` extra (``deltalake``)."""

from .export import export_delta

__all__ = ["export_delta"]
