"""Helpers shared by the CLI modules (I/O shell)."""

from __future__ import annotations

import argparse
import os

from gateway.settings import Settings, load_settings


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Load settings from ``--config`` (or ``GATEWAY_CONFIG``) and the environment.

    Raises:
        ConfigError: as :func:`gateway.settings.load_settings`.
    """
    path = getattr(args, "config", None) or os.environ.get("GATEWAY_CONFIG")
    return load_settings(path, os.environ)
