"""Alembic environment of the central server (I/O): runs through :func:`gateway.db.migrate`."""

from gateway.central.models import metadata
from gateway.migrations_env import run

run(metadata)
