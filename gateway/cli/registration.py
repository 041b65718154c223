"""``gateway central registration ...``: the parser of the registration officer's commands (I/O shell; the
handlers are in :mod:`gateway.cli.commands.registration`).

``list`` shows management requests (``--state submitted`` for the queue), ``approve ID`` applies one to the
registry (visible in the next global configuration), ``reject ID`` refuses it. docs/registration.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.cli.common import command, group, handlers

if TYPE_CHECKING:
    from gateway.cli.common import SubParsers

_handler = handlers("gateway.cli.commands.registration")


def add_commands(sub: SubParsers) -> None:
    """Add ``registration list|approve|reject`` under ``gateway central``."""
    help = "registration requests from security servers"
    g = group(sub, "registration", help, description=help)
    q = command(g, "list", _handler("cmd_list"), "list requests, oldest first")
    q.add_argument("--state", choices=("submitted", "approved", "rejected"))
    q.add_argument("--json", action="store_true")
    for name, help in (("approve", "approve a request and apply it to the registry"),
                       ("reject", "reject a request")):
        q = command(g, name, _handler(f"cmd_{name}"), help, description=help)
        q.add_argument("id", metavar="ID", type=int)
        q.add_argument("--officer", help="who decides (default: the login name)")
        q.add_argument("--comment", help="a note kept with the decision")
