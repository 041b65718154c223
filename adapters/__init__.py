"""Built-in service adapters: small HTTP services that expose a registry as a REST service with OpenAPI.

- :mod:`adapters.sql`: a table or query of any SQLAlchemy database, read-only.
- :mod:`adapters.files`: a CSV or JSON dataset loaded at start.
- :mod:`adapters.passthrough`: forwards to an existing internal HTTP API.
- :mod:`adapters.server`: mounts adapters under ``/{name}`` in one aiohttp application.
- :mod:`adapters.config`: the adapters' TOML file.
- :mod:`adapters.demo_data`: deterministic sample registries for the demo federation.

Adapters import from the gateway only :mod:`gateway.adapterapi`, :mod:`gateway.identifiers` and
:mod:`gateway.errors` (an import-linter contract enforces it). See ``docs/adapters.md``.
"""
