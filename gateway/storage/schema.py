"""What every part's database schema shares: the constraint naming convention and column types (pure: SQLAlchemy
type and metadata declarations, no I/O).

Each part that keeps state (``admin``, ``central``, ``messagelog``, ``serverconf``) has its own metadata and
its own Alembic history, but they all name constraints by one convention, so that a migration can refer to
a constraint by a name it can predict on SQLite and PostgreSQL alike, and they all store timestamps as
aware UTC datetimes through :class:`UtcDateTime`. Migrations import the types from here, never from a
``models`` module, so that a revision keeps meaning what it meant when it was written.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

# The names Alembic's op.f() and the models' metadata give to indexes and constraints ("uq_sc_clients_client",
# "fk_sc_services_client_id_sc_clients", ...). Changing one renames constraints in existing databases.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def new_metadata() -> sa.MetaData:
    """A fresh metadata object for one part's tables, with the shared :data:`NAMING_CONVENTION`."""
    return sa.MetaData(naming_convention=NAMING_CONVENTION)


class UtcDateTime(sa.TypeDecorator[datetime]):
    """A timestamp that only accepts aware datetimes and always returns aware UTC datetimes.

    SQLite has no time-zone type: values are stored as UTC without an offset and the offset is put back
    on read, so both backends hand out the same aware values. A naive datetime is refused with
    :class:`ValueError` rather than guessed at.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.utcoffset() is None:  # also None when tzinfo is None
            raise ValueError(f"naive datetime {value!r} given to the database; pass an aware UTC datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
