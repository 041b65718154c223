"""Shared body of every part's Alembic ``env.py`` (I/O).

:func:`gateway.storage.db.migrate` hands the open connection and the part's version table to Alembic through
``config.attributes``; each part's ``env.py`` only names its metadata and calls :func:`run`.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import MetaData


def run(target_metadata: MetaData) -> None:
    config = context.config
    connection = config.attributes.get("connection")
    if connection is None:  # pragma: no cover - offline SQL generation is not supported
        raise RuntimeError("run migrations through gateway.storage.db.migrate, which passes a connection")
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        version_table=config.attributes["version_table"],
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()
