"""The central server's admin REST API (docs/central-admin-api.md).

The same authentication model, middleware, audit log and shared handlers as the security server's admin API
(:mod:`gateway.admin`), over the central server's registry, registration requests, signing keys and
publications. Modules: :mod:`~gateway.admin.central.routes` (pure: the route table per instance),
:mod:`~gateway.admin.central.context`, :mod:`~gateway.admin.central.handlers`, :mod:`~gateway.admin.central.app`
(the aiohttp application and how ``gateway central serve`` and ``gateway demo`` start it).
"""
