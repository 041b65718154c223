"""Admin roles (pure).

X-Road's five security-server roles (X-Road UG-SS section 2; ``Role.java``) plus an auditor, who may read and
export the message log and nothing else (docs/admin-api.md). A user or API key holds one or more roles; every
route of :mod:`gateway.admin.routes` names the roles that may call it, and a caller needs at least one of them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal, get_args

from gateway.errors import RequestError

Role = Literal[
    "system-administrator",  # users, API keys, signing keys of sessions, audit log, global configuration
    "security-officer",  # tokens, keys, certificates, CSRs
    "registration-officer",  # adds, removes and (de)registers hosted clients
    "service-administrator",  # services, endpoints, access rights, local groups, IS certificates
    "observer",  # reads everything except the message log and the audit log
    "auditor",  # reads and exports the message log; nothing else
]
ROLES: tuple[Role, ...] = get_args(Role)

ROLE_DESCRIPTIONS: dict[Role, str] = {
    "system-administrator": "users, API keys, session signing keys, audit log, global configuration",
    "security-officer": "tokens, keys, certificates and certificate requests",
    "registration-officer": "adds, removes, registers and disables hosted clients",
    "service-administrator": "services, endpoints, access rights, local groups, IS certificates",
    "observer": "reads the configuration (not the message log, not the audit log)",
    "auditor": "reads and exports the message log, nothing else",
}

# The central server's roles (X-Road UG-CS section 2: no service administrator there) and what each may do.
CENTRAL_ROLE_DESCRIPTIONS: dict[Role, str] = {
    "system-administrator": "users, API keys, session signing keys, the audit log, publishing now, witness "
                            "policies",
    "registration-officer": "members, subsystems, security servers, global groups, registration requests",
    "security-officer": "trusted CAs with OCSP responders, timestamping authorities, configuration-signing keys, "
                        "witness policies",
    "observer": "reads the registry, requests, keys, witness policies and published versions (not the audit log)",
    "auditor": "reads the audit log, registration requests, witness policies and published versions, nothing "
               "else",
}
CENTRAL_ROLES: tuple[Role, ...] = tuple(CENTRAL_ROLE_DESCRIPTIONS)

# Who may read this server's configuration (clients, services, rights, groups, global configuration status).
READERS: frozenset[Role] = frozenset(r for r in ROLES if r != "auditor")


def parse_roles(values: Iterable[str]) -> frozenset[Role]:
    """Validate a list of role names (at least one, each known).

    Raises:
        RequestError: an unknown role, or no role at all.
    """
    found: set[Role] = set()
    for value in values:
        if value not in ROLES:
            raise RequestError(f"role {str(value)[:40]!r} is unknown", hint=f"roles: {', '.join(ROLES)}")
        found.add(value)
    if not found:
        raise RequestError("at least one role is required", hint=f"roles: {', '.join(ROLES)}")
    return frozenset(found)


def sorted_roles(roles: Iterable[Role]) -> list[Role]:
    """Roles in the order of :data:`ROLES` (stable output for storage and responses)."""
    have = set(roles)
    return [r for r in ROLES if r in have]
