"""Alembic environment of the central server (I/O): runs through :func:`gateway.storage.db.migrate`."""

from gateway.central.models import metadata
from gateway.storage.migrations_env import run

run(metadata)
