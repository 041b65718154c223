"""The security server's admin REST API: users, API keys, roles, audit log, OpenAPI document.

docs/admin-api.md; ``docs/admin-api.md`` is the operator's reference. Modules:

- :mod:`gateway.admin.roles` (pure): the six roles and what each is for;
- :mod:`gateway.admin.auth` (pure): password hashing, session tokens (JWT), API keys, the lock-out rule;
- :mod:`gateway.admin.schema` (pure): validation against the route table's JSON schemas (``jsonschema``),
  pagination;
- :mod:`gateway.admin.formats` (pure): the schemas of identifiers, user names, passwords, token ids, with the
  ``format`` checkers that word their errors;
- :mod:`gateway.admin.routes` (pure): the route table (method, path, roles, schemas) every other part reads;
- :mod:`gateway.admin.openapi` (pure): the OpenAPI 3.1 document generated from the route table;
- :mod:`gateway.admin.models` and :mod:`gateway.admin.store` (I/O): the ``adm_*`` tables;
- :mod:`gateway.admin.auditlog` (pure): the audit log as a Merkle log: entry encoding, leaves, origin
  ``<server id>/audit``, the chain check; :mod:`gateway.admin.auditcheckpointer` (I/O): its signed, timestamped
  checkpoints and the log as a witnessed checkpoint source; :mod:`gateway.admin.auditarchive` (I/O, files only),
  :mod:`gateway.admin.auditverify` (pure) and :mod:`gateway.admin.auditexport` (I/O): audit archives written,
  verified offline, and the online check (docs/auditing.md section 7, docs/witness.md section 7);
- :mod:`gateway.admin.context`: what the handlers share (the context, the per-request call, the app keys);
- :mod:`gateway.admin.middleware` (I/O): the error and audit middleware, authentication, the route wrapper;
- :mod:`gateway.admin.handlers` (I/O): the handlers, one module per OpenAPI tag of the route table;
- :mod:`gateway.admin.app` (I/O): the aiohttp application, on its own port, never on a proxy port;
- :mod:`gateway.admin.central`: the central server's admin API on the same model (docs/central-admin-api.md).
"""
