"""Alembic environment of the message log (I/O): runs through :func:`gateway.db.migrate`."""

from gateway.messagelog.models import metadata
from gateway.migrations_env import run

run(metadata)
