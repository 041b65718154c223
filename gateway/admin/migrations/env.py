"""Alembic environment of the admin API (I/O): runs through :func:`gateway.storage.db.migrate`."""

from gateway.admin.models import metadata
from gateway.storage.migrations_env import run

run(metadata)
