"""The security server's web interface for operators and auditors, on the admin port under ``/ui`` (I/O).

Server-rendered pages (Jinja2 templates in ``templates/``, one stylesheet in ``static/``, no script): every
form works without JavaScript. Each page and form runs the admin API's own operations
(:data:`gateway.admin.app.HANDLERS`) through :func:`gateway.admin.web.ops.run_op`, with the API's role check,
request schema and audit entry, so no rule exists twice. ``docs/web-ui.md`` describes the pages.
"""
