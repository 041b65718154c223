"""Alembic environment of the witness's state (I/O): runs through :func:`gateway.storage.db.migrate`."""

from gateway.storage.migrations_env import run
from gateway.witness.models import metadata

run(metadata)
