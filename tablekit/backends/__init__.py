"""Backends answer :class:`tablekit.query.Query` objects; see :mod:`tablekit.backends.base`."""
