"""Operational logging with structlog: key-value on a terminal, JSON otherwise (I/O).

Operational logs are not the message log: they say what the process did (started, refused a request with
detail id X, lost a peer), for operators; the message log is the signed, append-only record for auditors.
"""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING

from gateway.errors import ConfigError
from gateway.settings import LoggingSettings

if TYPE_CHECKING:
    import structlog

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


class _CurrentStderr:
    """Whatever ``sys.stderr`` is at the time of writing (test runners and daemons replace it)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure_logging(settings: LoggingSettings) -> None:
    """Set up structlog once per process from ``[logging]``.

    Raises:
        ConfigError: an unknown level.
    """
    level = LEVELS.get(settings.level.lower())
    if level is None:
        raise ConfigError(f"[logging] key 'level': {settings.level!r} is not one of {', '.join(LEVELS)}")
    import structlog  # ~0.1 s with rich: only for a command that runs, never for `gateway --help`
    as_json = settings.format == "json" or (settings.format == "auto" and not sys.stderr.isatty())
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if as_json else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=_CurrentStderr()),  # type: ignore[arg-type]  # duck-typed TextIO
        cache_logger_on_first_use=False,
    )
