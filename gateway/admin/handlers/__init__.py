"""The admin API's handlers, one module per OpenAPI tag of :data:`gateway.admin.routes.ROUTES` (I/O).

Each handler is an :data:`gateway.admin.context.Impl`: it gets the call established so far (caller, validated
body), the request and the :class:`~gateway.admin.context.AdminContext`, and returns a JSON value, ``None``
(for a 204 route) or a response it made itself. :data:`gateway.admin.app.HANDLERS` maps every route's
``operationId`` to its handler; :mod:`gateway.admin.middleware` runs authentication, the role check, body
validation and the audit entry around it. Modules, by tag:

- :mod:`.meta` (``meta``): the OpenAPI document;
- :mod:`.session` (``session``): login, logout, the caller, their own password;
- :mod:`.users` (``users``), :mod:`.api_keys` (``api-keys``), :mod:`.session_keys` (``session-keys``),
  :mod:`.audit_log` (``audit-log``): the admin API's own accounts, keys and audit log;
- :mod:`.clients` (``clients``), :mod:`.services` (``services``), :mod:`.access_rights` (``access-rights``),
  :mod:`.local_groups` (``local-groups``): the security server's configuration;
- :mod:`.token` (``token``): the software token's keys, certificates and CSRs;
- :mod:`.globalconf` (``globalconf``): the global configuration's status and download;
- :mod:`.messagelog` (``messagelog``): records, checkpoints, proofs and archives for auditors;
- :mod:`.opmon` (``opmon``): operational-monitoring records, one per exchange and side;
- :mod:`.common`: what several of them share (paths, pages, times, the serverconf reload).
"""
