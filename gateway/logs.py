"""Operational logging with structlog: key-value on a terminal, JSON otherwise (I/O).

Operational logs are not the message log: they say what the process did (started, refused a request with
detail id X, lost a peer), for operators; the message log is the signed, append-only record for auditors.

:func:`info_line` writes a line of the hot path (the proxies' ``exchange`` line, one per exchange and side)
without structlog's per-call machinery when the process logs JSON: the same bytes as ``logger.info``, in a
fifth of its instructions (docs/performance.md section 12).
"""

from __future__ import annotations

import contextvars
import logging
import sys
import threading
import time
from datetime import UTC, datetime
from json.encoder import encode_basestring_ascii
from math import isfinite
from typing import TYPE_CHECKING, Any

from gateway.errors import ConfigError
from gateway.settings import LoggingSettings

if TYPE_CHECKING:
    import structlog

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}

# One lock for every line this process writes, structlog's and info_line's: a line is never cut by another.
_WRITE_LOCK = threading.Lock()


class _StderrLogger:
    """structlog's wrapped logger: each message as one line on whatever ``sys.stderr`` is at the time of
    writing (test runners and daemons replace it), flushed; what ``structlog.PrintLogger`` writes, under
    :data:`_WRITE_LOCK`."""

    def msg(self, message: str) -> None:
        with _WRITE_LOCK:
            out = sys.stderr
            out.write(message + "\n")
            out.flush()

    log = debug = info = warn = warning = err = error = critical = exception = fatal = failure = msg


_STDERR_LOGGER = _StderrLogger()


def _logger_factory(*_args: Any) -> _StderrLogger:
    return _STDERR_LOGGER


class _Direct:
    """What :func:`info_line` needs to know of the configuration :func:`configure_logging` made, to tell whether
    it is still in force: the processors (structlog's ``capture_logs`` in tests swaps the contents of the same
    list), the wrapper class (the level) and the logger factory; and whether info lines are written at all."""

    __slots__ = ("factory", "get_config", "info", "processors", "wrapper")

    def __init__(self, processors: list[Any], *, wrapper: Any, info: bool, get_config: Any) -> None:
        self.processors = tuple(processors)
        self.wrapper = wrapper
        self.factory = _logger_factory
        self.info = info
        self.get_config = get_config  # structlog.get_config

    def in_force(self) -> bool:
        config = self.get_config()
        return (config["wrapper_class"] is self.wrapper and config["logger_factory"] is self.factory
                and tuple(config["processors"]) == self.processors)


_DIRECT: _Direct | None = None  # set when configure_logging renders JSON

FieldValue = str | int | float | None


def configure_logging(settings: LoggingSettings) -> None:
    """Set up structlog once per process from ``[logging]``.

    Raises:
        ConfigError: an unknown level.
    """
    global _DIRECT
    level = LEVELS.get(settings.level.lower())
    if level is None:
        raise ConfigError(f"[logging] key 'level': {settings.level!r} is not one of {', '.join(LEVELS)}")
    import structlog  # ~0.1 s with rich: only for a command that runs, never for `gateway --help`
    as_json = settings.format == "json" or (settings.format == "auto" and not sys.stderr.isatty())
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if as_json else structlog.dev.ConsoleRenderer(colors=False)
    )
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        renderer,
    ]
    wrapper = structlog.make_filtering_bound_logger(level)
    structlog.configure(
        processors=processors,
        wrapper_class=wrapper,
        logger_factory=_logger_factory,
        cache_logger_on_first_use=False,
    )
    _DIRECT = (_Direct(processors, wrapper=wrapper, info=level <= logging.INFO, get_config=structlog.get_config)
               if as_json else None)


# The timestamp's text up to the seconds, for the last second seen: (Unix second, "YYYY-MM-DDTHH:MM:SS").
_SECOND: tuple[int, str] = (-1, "")
_CONTEXT_PREFIX = "structlog_"  # structlog.contextvars' names for the variables bind_contextvars sets
_RESERVED = frozenset({"event", "level", "timestamp", "exc_info"})  # keys the processors set or read


def _timestamp() -> str:
    """``datetime.now(UTC).isoformat()`` with ``Z`` for ``+00:00``: what structlog's ``TimeStamper(fmt="iso",
    utc=True)`` writes (no fraction when the microseconds are 0, as ``isoformat`` does)."""
    global _SECOND
    second, micros = divmod(time.time_ns() // 1000, 1_000_000)
    cached = _SECOND
    if cached[0] != second:
        cached = _SECOND = (second, datetime.fromtimestamp(second, UTC).isoformat()[:19])
    return "%s.%06dZ" % (cached[1], micros) if micros else cached[1] + "Z"  # noqa: UP031 - the cheaper form


def _bound_context() -> bool:
    """Whether ``structlog.contextvars.bind_contextvars`` has bound a value in this context (unbinding leaves
    the variable at ``...``)."""
    ctx = contextvars.copy_context()
    for var in ctx:
        if var.name.startswith(_CONTEXT_PREFIX) and ctx[var] is not Ellipsis:
            return True
    return False


def info_line(logger: Any, event: str, fields: dict[str, FieldValue]) -> None:
    """``logger.info(event, **fields)``, written straight out when the process logs JSON as
    :func:`configure_logging` set it up, with nothing bound (neither on ``logger``, a module's
    ``structlog.get_logger(...)``, nor with ``bind_contextvars``), and every value a string, an integer, a finite
    float or ``None``: the line is then the one structlog would write, byte for byte (the fields in order, then
    ``event``, ``level``, ``timestamp``; ``tests/unit/test_logs.py`` compares them). Anything else, including a
    configuration that is not :func:`configure_logging`'s (structlog's ``capture_logs`` in tests), goes through
    ``logger.info``. Below the configured level nothing is written."""
    direct = _DIRECT
    if direct is None or not direct.in_force():
        logger.info(event, **fields)
        return
    if not direct.info:
        return
    if not _RESERVED.isdisjoint(fields):
        logger.info(event, **fields)
        return
    parts = ["{"]
    for key, value in fields.items():
        # json.dumps' text of each value (ensure_ascii, as JSONRenderer's default); any other type (a bool is
        # an int that json writes as true) or a float json writes as NaN or Infinity takes structlog's path
        kind = type(value)
        if kind is str:
            text = encode_basestring_ascii(value)  # type: ignore[arg-type]  # type() is str
        elif value is None:
            text = "null"
        elif kind is int:
            text = int.__repr__(value)
        elif kind is float and isfinite(value):  # type: ignore[arg-type]  # type() is float
            text = float.__repr__(value)
        else:
            logger.info(event, **fields)
            return
        parts.append(encode_basestring_ascii(key))
        parts.append(": ")
        parts.append(text)
        parts.append(", ")
    if _bound_context():
        logger.info(event, **fields)
        return
    parts.append('"event": ')
    parts.append(encode_basestring_ascii(event))
    parts.append(', "level": "info", "timestamp": "')
    parts.append(_timestamp())
    parts.append('"}\n')
    line = "".join(parts)
    with _WRITE_LOCK:
        out = sys.stderr
        out.write(line)
        out.flush()
