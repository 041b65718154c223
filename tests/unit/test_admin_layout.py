"""The admin API's handler layout: every operation's handler lives in the handlers module of its OpenAPI tag
(gateway/admin/handlers/<tag>.py), so the route table's tags and the code stay one picture."""

from __future__ import annotations

import pytest

from gateway.admin.app import HANDLERS
from gateway.admin.routes import ROUTES, Route


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: r.operation_id)
def test_handler_is_in_the_module_of_its_tag(route: Route) -> None:
    module = HANDLERS[route.operation_id].__module__
    assert module == f"gateway.admin.handlers.{route.tag.replace('-', '_')}"
