"""The navigation of the web interface: a page is listed only for a user whose roles allow the API operation
that shows it (pure)."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.admin.web.ops import User


@dataclass(frozen=True, slots=True, kw_only=True)
class NavItem:
    key: str
    label: str
    url: str
    current: bool


# (key, label, path under /ui, the API operation the page shows; None: every signed-in user)
PAGES: tuple[tuple[str, str, str, str | None], ...] = (
    ("dashboard", "Dashboard", "/ui/dashboard", None),
    ("clients", "Clients", "/ui/clients", "listClients"),
    ("services", "Services", "/ui/services", "listServices"),
    ("groups", "Local groups", "/ui/local-groups", "listLocalGroups"),
    ("keys", "Keys and certificates", "/ui/keys", "getToken"),
    ("messagelog", "Message log", "/ui/messagelog", "listMessageLogRecords"),
    ("users", "Users and API keys", "/ui/users", "listUsers"),
    ("audit", "Audit log", "/ui/audit-log", "listAuditLog"),
    ("account", "Your account", "/ui/account", None),
)


def nav_for(user: User, current: str) -> list[NavItem]:
    return [NavItem(key=k, label=label, url=url, current=k == current)
            for k, label, url, op in PAGES if op is None or user.may(op)]


__all__ = ["PAGES", "NavItem", "nav_for"]
