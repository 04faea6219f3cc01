"""The integration suite's PostgreSQL server: the development tools' helper, re-exported (the
bench starts one too, and the tools never import from ``tests/``)."""

from labelloop_tools.postgres import PORT, PostgresServer

__all__ = ["PORT", "PostgresServer"]
