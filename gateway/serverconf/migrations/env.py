"""Alembic environment of serverconf (I/O): runs through :func:`gateway.db.migrate`."""

from gateway.migrations_env import run
from gateway.serverconf.models import metadata

run(metadata)
