"""Helpers shared by the CLI modules: settings from ``--config``, lazy handlers, parser building (I/O shell).

Everything here is cheap to import (argparse, importlib and :mod:`gateway.settings`): the parser modules
(``gateway.cli.<domain>``) use it while ``gateway --help`` builds the whole parser, before any subcommand
runs. A subcommand's handler is named, not imported: :func:`handlers` gives :class:`LazyHandler` objects
that import ``gateway.cli.commands.<domain>`` (and with it SQLAlchemy, aiohttp, cryptography...) only when
that subcommand runs.
"""

from __future__ import annotations

import argparse
import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias

from gateway.settings import Settings, load_settings

if TYPE_CHECKING:
    SubParsers: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]

Handler: TypeAlias = Callable[[argparse.Namespace], int]


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Load settings from ``--config`` (or ``GATEWAY_CONFIG``) and the environment.

    Raises:
        ConfigError: as :func:`gateway.settings.load_settings`.
    """
    path = getattr(args, "config", None) or os.environ.get("GATEWAY_CONFIG")
    return load_settings(path, os.environ)


def setting_source(args: argparse.Namespace, section: str, key: str) -> str:
    """Where ``[section] key`` came from, for error messages: ``environment variable GATEWAY_...``,
    ``settings file F`` or ``default settings``."""
    env = f"GATEWAY_{section.upper()}__{key.upper()}"
    if env in os.environ:
        return f"environment variable {env}"
    path = getattr(args, "config", None) or os.environ.get("GATEWAY_CONFIG")
    return f"settings file {path}" if path else "default settings"


def database_setting(args: argparse.Namespace, section: str) -> str:
    """The ``where`` of :func:`gateway.storage.db.open_database` for ``[section] database_url``."""
    return f"{setting_source(args, section, 'database_url')}: [{section}] key 'database_url'"


@dataclass(frozen=True, slots=True)
class LazyHandler:
    """A subcommand's handler named ``module:function``; the module is imported when the subcommand runs."""

    target: str

    def resolve(self) -> Handler:
        """The handler function itself (imports its module).

        Raises:
            ImportError, AttributeError: the target names no such module or function (a bug, caught by
                tests/unit/test_cli_start.py, which resolves every handler of the parser).
        """
        module, _, name = self.target.partition(":")
        handler: Handler = getattr(importlib.import_module(module), name)
        return handler

    def __call__(self, args: argparse.Namespace) -> int:
        return self.resolve()(args)


def handlers(module: str) -> Callable[[str], LazyHandler]:
    """``handlers("gateway.cli.commands.central")("member_add")``: a lazy handler for a function of a module."""

    def named(function: str) -> LazyHandler:
        return LazyHandler(f"{module}:{function}")

    return named


def command(sub: SubParsers, name: str, handler: Handler, help: str, **kwargs: Any) -> argparse.ArgumentParser:
    """Add subcommand ``name`` running ``handler``; ``kwargs`` go to ``add_parser`` (description, parents)."""
    p = sub.add_parser(name, help=help, **kwargs)
    p.set_defaults(handler=handler)
    return p


def group(sub: SubParsers, name: str, help: str, *, metavar: str = "ACTION", **kwargs: Any) -> SubParsers:
    """Add ``name`` as a group of subcommands (``gateway admin user ...``); its actions go on the result."""
    p = sub.add_parser(name, help=help, **kwargs)
    return p.add_subparsers(dest=f"{name.replace('-', '_')}_command", metavar=metavar, required=True)
