"""One database transaction, and what its database errors mean to the caller (I/O).

Every store that writes (``admin``, ``serverconf``, the central server's registry) runs each operation in
one transaction: committed when the block returns, rolled back when it raises. A unique (or other
integrity) constraint the block trips over means that a concurrent writer got there between our check and
our write, or that the row exists; each store says which error it answers with, so :func:`transaction`
takes the errors to raise as factories and defines none itself.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TypeVar

from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

T = TypeVar("T")


@asynccontextmanager
async def begin_session(engine: AsyncEngine) -> AsyncIterator[AsyncSession]:
    """An ORM session in a transaction. Loaded objects stay readable after the commit
    (``expire_on_commit=False``): the stores turn them into records after the block."""
    async with AsyncSession(engine, expire_on_commit=False) as session, session.begin():
        yield session


@asynccontextmanager
async def transaction(
    begin: AbstractAsyncContextManager[T],
    *,
    conflict: Callable[[IntegrityError], Exception] | None = None,
    database_error: Callable[[SQLAlchemyError | OSError], Exception] | None = None,
) -> AsyncIterator[T]:
    """Run the block in the transaction ``begin`` opens (``engine.begin()`` for a connection,
    :func:`begin_session` for a session) and translate the database's errors.

    Errors the block raises itself (a ``GatewayError`` for a missing row, say) pass through unchanged,
    after the rollback.

    Raises:
        Exception: ``conflict(e)`` for an :class:`IntegrityError` ``e`` (a unique, foreign-key or check
            constraint refused the write, here or at the commit); the ``IntegrityError`` itself when
            ``conflict`` is None. ``database_error(e)`` for any other :class:`SQLAlchemyError` (the
            database is unreachable, the schema is wrong); the error itself when ``database_error`` is
            None; the same for an :class:`OSError` (SQLAlchemy passes the driver's failure to connect through
            unwrapped: refused, reset, timed out). Either way the database error is the raised exception's
            ``__cause__``.
    """
    try:
        async with begin as handle:
            yield handle
    except IntegrityError as e:
        if conflict is None:
            raise
        raise conflict(e) from e
    except (SQLAlchemyError, OSError) as e:
        if database_error is None:
            raise
        raise database_error(e) from e


def describe(e: BaseException) -> str:
    """``e``'s type and the first line of its text (at most 300 characters), for a message."""
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0][:300]}" if text else type(e).__name__
