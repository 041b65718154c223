"""Alembic environment of operational monitoring (I/O): runs through :func:`gateway.storage.db.migrate`."""

from gateway.opmon.models import metadata
from gateway.storage.migrations_env import run

run(metadata)
