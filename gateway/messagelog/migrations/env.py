"""Alembic environment of the message log (I/O): runs through :func:`gateway.storage.db.migrate`."""

from gateway.messagelog.models import metadata
from gateway.storage.migrations_env import run

run(metadata)
