"""What every changing CLI command shares: its change recorded in the admin audit log (I/O shell).

docs/operations.md section "Changes from the command line are audited". :func:`audited` runs a command's change
and writes one audit entry (:func:`gateway.cli.commands.admin.cli_audit`: actor ``cli:<OS user>``, address
``cli@<host name>``, the action named like the admin API operation that makes the same change, the target, the
result) whether the change succeeds or is refused; the admin schema is brought up to date first, so a database
that cannot take the entry stops the command before anything changes. ``gateway serverconf``, ``gateway token``
and ``gateway admin`` write to the security server's audit log (``[server] database_url``), ``gateway central``
to the central server's (:mod:`gateway.cli.commands.centraldb`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.admin.store import AdminStore
from gateway.errors import GatewayError

T = TypeVar("T")


async def audited(
    engine: AsyncEngine, *, action: str, target: str, command: str, change: Callable[[], Awaitable[T]],
    details: dict[str, Any] | None = None,
) -> T:
    """Run ``change`` and record it in the audit log on ``engine``: ``success`` (status 200), or the error's
    status and message (``refused`` for 4xx, ``failed`` for 5xx) before re-raising it.

    Raises:
        GatewayError: whatever ``change`` raises (audited first); the audit log cannot be written.
    """
    from gateway.cli.commands.admin import cli_audit

    store = AdminStore(engine)
    await store.migrate()
    try:
        result = await change()
    except GatewayError as e:
        await cli_audit(store, action, target, status=e.http_status, error=e.message, command=command,
                        details=details)
        raise
    await cli_audit(store, action, target, status=200, command=command, details=details)
    return result


__all__ = ["audited"]
