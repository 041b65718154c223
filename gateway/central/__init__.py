"""The central server: registry, configuration-signing keys and the signed global configuration.

Modules: :mod:`~gateway.central.models` (schema), :mod:`~gateway.central.registry` (members, servers,
groups, CAs, TSAs), :mod:`~gateway.central.signingkeys`, :mod:`~gateway.central.publisher` (build, sign,
store), :mod:`~gateway.central.app` (HTTP). This module holds what they share: where the migrations are and
the checks of the ``[central]`` settings (pure).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from gateway.errors import ConfigError, IdentifierError
from gateway.identifiers import check_part
from gateway.settings import CentralSettings

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
VERSION_TABLE = "alembic_version_central"


async def migrate_central(engine: AsyncEngine) -> None:
    """Bring the central server's schema up to date (idempotent)."""
    from gateway.storage.db import migrate

    await migrate(engine, MIGRATIONS_DIR, VERSION_TABLE)


def settings_problems(central: CentralSettings) -> list[tuple[str, str]]:
    """Problems in the ``[central]`` settings as (key, message) pairs; empty if they are usable (pure)."""
    problems: list[tuple[str, str]] = []
    try:
        check_part(central.instance, what="instance code")
    except IdentifierError as e:
        problems.append(("instance", e.message))
    if not 0 <= central.port <= 65535:
        problems.append(("port", f"{central.port} is not a TCP port (0-65535)"))
    if not -1 <= central.ops_port <= 65535:
        problems.append(("ops_port", f"{central.ops_port} is not a TCP port (0-65535) or -1 (off)"))
    for key in ("conf_validity_seconds", "publish_interval_seconds", "ocsp_freshness_seconds",
                "timestamp_grace_seconds"):
        if getattr(central, key) < 1:
            problems.append((key, f"must be at least 1 second, got {getattr(central, key)}"))
    if central.publish_interval_seconds * 2 > central.conf_validity_seconds:
        problems.append((
            "publish_interval_seconds",
            f"{central.publish_interval_seconds} s is more than half of conf_validity_seconds "
            f"({central.conf_validity_seconds} s): clients' copies could expire between two checks",
        ))
    if central.public_url:
        try:
            parts = urlsplit(central.public_url)
            ok = parts.scheme in ("http", "https") and bool(parts.hostname) and not parts.query
        except ValueError:
            ok = False
        if not ok:
            problems.append(("public_url", f"{central.public_url!r} is not an http(s) base URL"))
    if not central.key_dir:
        problems.append(("key_dir", "is empty"))
    return problems


def check_settings(central: CentralSettings, *, source: str = "settings") -> None:
    """Refuse unusable ``[central]`` settings, naming the source and the key.

    Raises:
        ConfigError: the first problem found by :func:`settings_problems`.
    """
    problems = settings_problems(central)
    if problems:
        key, message = problems[0]
        raise ConfigError(f"{source}: [central] key {key!r}: {message}")
