"""Alembic environment of the admin API (I/O): runs through :func:`gateway.db.migrate`."""

from gateway.admin.models import metadata
from gateway.migrations_env import run

run(metadata)
