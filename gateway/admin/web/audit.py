"""The audit-log table, the same on both servers' pages (I/O: reads through the API's ``listAuditLog``).

The API pages the log newest first. The table sorts on the server:

- by number (``sort=id``, the default, newest first) in either direction over **every** matching entry: an
  ascending page is the API's descending page at the mirrored offset, reversed (one more call counts the
  entries first);
- by actor, action, result or status among the newest :data:`~gateway.admin.schema.MAX_LIMIT` matching
  entries, and the caption says so when there are more (never cut silently); the filters narrow the log
  first.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web

from gateway.admin.schema import MAX_LIMIT, Page, parse_page
from gateway.admin.web.render import Column, Table, sort_order, table

FILTERS = ("actor", "action", "result")
DEFAULT_LIMIT = 50  # entries per page unless the address asks
COLUMNS = (
    Column(key="id", label="No."), Column(key="at", label="Time", sortable=False), Column(key="actor", label="Actor"),
    Column(key="auth", label="Auth", sortable=False), Column(key="remote", label="From", sortable=False),
    Column(key="action", label="Action"), Column(key="result", label="Result"), Column(key="status", label="Status"),
    Column(key="error", label="Error", sortable=False),
)
CAPTION = "Audit entries"
List = Callable[[Mapping[str, str]], Awaitable[Any]]  # listAuditLog with these query parameters


def filters(request: web.Request) -> dict[str, str]:
    """The filter fields of the address that are set (stripped)."""
    return {k: request.query[k].strip() for k in FILTERS if request.query.get(k, "").strip()}


def _page(request: web.Request) -> Page:
    return parse_page({"limit": str(DEFAULT_LIMIT), **request.query})


async def audit_table(request: web.Request, list_audit: List) -> Table:
    """The page of the audit log the address asks for (filters, ``sort``, ``dir``, ``limit``, ``offset``).

    Raises:
        RequestError: 400 for an unknown sort column, a direction other than asc or desc, or a bad page; and
            whatever ``listAuditLog`` raises (a bad filter: 400).
    """
    sort, descending = sort_order(request.query, COLUMNS, default_sort="id", default_desc=True)
    page = _page(request)
    where = filters(request)
    if sort != "id":  # among the newest MAX_LIMIT, sorted and paged here
        listed = await list_audit({**where, "limit": str(MAX_LIMIT)})
        return table(request, listed["items"], COLUMNS, caption=CAPTION, default_sort="id", default_desc=True,
                     total=listed["total"], default_limit=DEFAULT_LIMIT)
    if descending:
        listed = await list_audit({**where, "limit": str(page.limit), "offset": str(page.offset)})
        rows, total = listed["items"], listed["total"]
    else:  # oldest first: the mirrored page of the newest-first order, reversed
        total = (await list_audit({**where, "limit": "1"}))["total"]
        count = min(page.limit, total - page.offset)
        rows = []
        if count > 0:
            mirrored = max(0, total - page.offset - page.limit)
            listed = await list_audit({**where, "limit": str(count), "offset": str(mirrored)})
            rows = list(reversed(listed["items"]))
    return Table(columns=COLUMNS, rows=rows, total=total, page=page, sort="id", descending=descending,
                 base=request.rel_url, caption=f"{CAPTION}, {'newest' if descending else 'oldest'} first")


def empty(request: web.Request) -> Table:
    """No rows: the table beside a refused filter."""
    return Table(columns=COLUMNS, rows=[], total=0, page=Page(limit=DEFAULT_LIMIT), sort="id", descending=True,
                 base=request.rel_url, caption=f"{CAPTION}, newest first")


__all__ = ["COLUMNS", "DEFAULT_LIMIT", "FILTERS", "audit_table", "empty", "filters"]
