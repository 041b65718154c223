"""The handlers of the ``gateway`` subcommands, one module per domain (I/O shell).

``gateway.cli.<domain>`` builds a domain's parser and names its handlers here lazily
(:class:`gateway.cli.common.LazyHandler`), so that this package, and the SQLAlchemy, Alembic, aiohttp and
cryptography it imports, is loaded only when a subcommand runs, never for ``gateway --help``.
"""
