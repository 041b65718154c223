"""Alembic environment of serverconf (I/O): runs through :func:`gateway.storage.db.migrate`."""

from gateway.serverconf.models import metadata
from gateway.storage.migrations_env import run

run(metadata)
