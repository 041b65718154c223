"""Templates, times and tables of the web interface (I/O: reads the templates once).

Every time is shown in UTC with its zone (``2026-12-02 14:50:19 UTC``). Tables are sorted and paged on the
server, from the query parameters ``sort`` (a column key), ``dir`` (``asc`` or ``desc``), ``limit`` and
``offset`` (:func:`gateway.admin.schema.parse_page`, as the API's lists), so they work without JavaScript; a
page says how many rows there are in all, and never cuts silently.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2
from aiohttp import web
from yarl import URL

from gateway.admin.schema import Page, paginate, parse_page
from gateway.errors import RequestError

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"

_ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True, undefined=jinja2.StrictUndefined,
    trim_blocks=True, lstrip_blocks=True,
)


def show_time(value: object) -> str:
    """A time as ``YYYY-MM-DD HH:MM:SS UTC``: a datetime, or an RFC 3339 string as the API returns it."""
    if value is None or value == "":
        return "—"
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return str(value)
    if not isinstance(value, datetime):
        return str(value)
    if value.tzinfo is None:  # stored naive times are UTC (gateway.storage.schema.UtcDateTime)
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def show_age(seconds: float | None) -> str:
    """A duration in words: ``42 s``, ``7 min``, ``3 h 5 min``, ``2 d 4 h``."""
    if seconds is None:
        return "—"
    s = int(abs(seconds))
    text = f"{s} s" if s < 120 else f"{s // 60} min" if s < 7200 else (
        f"{s // 3600} h {s % 3600 // 60} min" if s < 172800 else f"{s // 86400} d {s % 86400 // 3600} h")
    return text if seconds >= 0 else f"{text} ago"


_ENV.filters["time"] = show_time
_ENV.filters["age"] = show_age


@dataclass(frozen=True, slots=True, kw_only=True)
class Column:
    key: str
    label: str
    sortable: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class Table:
    """One page of a sorted table, with what the template needs for its header links and pager."""

    columns: tuple[Column, ...]
    rows: Sequence[Mapping[str, Any]]
    total: int
    page: Page
    sort: str | None
    descending: bool
    base: URL
    caption: str
    of_all: int | None = None  # the API holds this many in all; only the first `total` were sorted (its limit)
    prefix: str = ""  # of its query parameters, for a second table on the page (``ksort``, ``koffset``, ...)

    def sort_url(self, key: str) -> str:
        descending = self.sort == key and not self.descending
        p = self.prefix
        return str(self.base.update_query({f"{p}sort": key, f"{p}dir": "desc" if descending else "asc",
                                           f"{p}offset": 0}))

    def aria_sort(self, key: str) -> str:
        if self.sort != key:
            return "none"
        return "descending" if self.descending else "ascending"

    def page_url(self, offset: int) -> str:
        return str(self.base.update_query({f"{self.prefix}offset": offset, f"{self.prefix}limit": self.page.limit}))

    @property
    def first(self) -> int:
        return min(self.page.offset + 1, self.total)

    @property
    def last(self) -> int:
        return min(self.page.offset + self.page.limit, self.total)

    @property
    def previous(self) -> int | None:
        return None if self.page.offset == 0 else max(0, self.page.offset - self.page.limit)

    @property
    def next(self) -> int | None:
        return self.page.offset + self.page.limit if self.page.offset + self.page.limit < self.total else None


def _sort_key(value: Any) -> tuple[int, Any]:
    if value is None:
        return (0, "")
    if isinstance(value, bool | int | float):
        return (1, float(value))
    return (2, str(value).lower())


def query_of(request: web.Request, prefix: str = "") -> Mapping[str, str]:
    """The query parameters of the table whose parameters' names start with ``prefix``, without it."""
    if not prefix:
        return request.query
    return {k[len(prefix):]: v for k, v in request.query.items() if k.startswith(prefix)}


def sort_order(
    q: Mapping[str, str], columns: Sequence[Column], *, default_sort: str | None, default_desc: bool = False,
) -> tuple[str | None, bool]:
    """The column to sort by and whether descending, from ``sort`` and ``dir`` in ``q``; only a sortable
    column may be named (the whitelist).

    Raises:
        RequestError: 400 for an unknown sort column or a direction other than asc or desc.
    """
    sortable = [c.key for c in columns if c.sortable]
    sort = q.get("sort", default_sort)
    if sort is not None and sort not in sortable:
        raise RequestError(f"sort column {sort[:40]!r} is not one of {', '.join(sortable)}")
    direction = q.get("dir", "desc" if default_desc and "sort" not in q else "asc")
    if direction not in ("asc", "desc"):
        raise RequestError(f"sort direction {direction[:20]!r} must be asc or desc")
    return sort, direction == "desc"


def table(
    request: web.Request, rows: Sequence[Mapping[str, Any]], columns: Sequence[Column], *, caption: str,
    default_sort: str | None = None, default_desc: bool = False, total: int | None = None,
    key: Callable[[Mapping[str, Any], str], Any] | None = None, prefix: str = "", default_limit: int | None = None,
) -> Table:
    """Sort ``rows`` by the ``sort``/``dir`` query parameters and cut the page ``limit``/``offset`` asks for;
    ``total``: how many the API holds, when ``rows`` are only its first page; ``prefix``: of the query
    parameters' names, for a second table on the page; ``default_limit``: rows per page unless ``limit`` says
    (default :data:`~gateway.admin.schema.DEFAULT_LIMIT`).

    Raises:
        RequestError: 400 for an unknown sort column, a direction other than asc or desc, or a bad page.
    """
    q = query_of(request, prefix)
    sort, descending = sort_order(q, columns, default_sort=default_sort, default_desc=default_desc)
    direction = "desc" if descending else "asc"
    page = parse_page(q if default_limit is None else {"limit": str(default_limit), **q})
    ordered = list(rows)
    if sort is not None:
        get = key or (lambda row, k: row.get(k))
        ordered.sort(key=lambda row: _sort_key(get(row, sort)), reverse=direction == "desc")
    chunk, count = paginate(ordered, page)
    return Table(
        columns=tuple(columns), rows=list(chunk), total=count, page=page, sort=sort, descending=direction == "desc",
        base=request.rel_url, caption=caption, of_all=total if total is not None and total > count else None,
        prefix=prefix,
    )


def render(template: str, *, status: int = 200, **values: Any) -> web.Response:
    """The page ``template`` rendered with ``values``, as HTML."""
    text = _ENV.get_template(template).render(**values)
    return web.Response(text=text, status=status, content_type="text/html", charset="utf-8",
                        headers={"Cache-Control": "no-store", "X-Frame-Options": "DENY",
                                 "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'"})


def redirect(location: str) -> web.Response:
    """303 See Other to ``location`` (returned, not raised: the admin middleware answers raised HTTP
    exceptions as API errors)."""
    return web.Response(status=303, headers={"Location": location, "Cache-Control": "no-store"})


__all__ = [
    "STATIC", "TEMPLATES", "Column", "Table", "query_of", "redirect", "render", "show_age", "show_time", "sort_order",
    "table",
]
