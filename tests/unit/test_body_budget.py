"""The per-server budget of message bodies held in memory (gateway.proxy.common.BodyBudget)."""

from __future__ import annotations

import dataclasses

import pytest
from faultside import SERVER_PROXY, detected_at

from gateway.errors import ConfigError, GatewayError
from gateway.proxy.common import BodyBudget
from gateway.server.runtime import SecurityServer
from gateway.settings import Settings


def test_accounts_take_until_the_limit_and_give_everything_back() -> None:
    budget = BodyBudget(100)
    a, b = budget.account(), budget.account()
    a.take(60, "request body")
    b.take(40, "the service's response")
    assert (budget.used, a.held, b.held) == (100, 60, 40)
    with pytest.raises(GatewayError) as info, detected_at(SERVER_PROXY):
        b.take(1, "the service's response")
    assert info.value.xroad_type == "Server.ServerProxy.Overloaded"
    assert "the service's response cannot be held now" in info.value.message
    assert "100 of its 100 bytes (max_inflight_body_bytes)" in info.value.message
    assert (budget.used, b.held) == (100, 40)  # a refused take holds nothing
    a.close()
    assert (budget.used, a.held) == (40, 0)
    a.close()  # idempotent
    assert budget.used == 40
    with b:
        b.take(60, "request body")
        assert budget.used == 100
    assert budget.used == 0


def test_an_exchange_that_fails_still_gives_its_bytes_back() -> None:
    budget = BodyBudget(10)
    with pytest.raises(RuntimeError), budget.account() as account:
        account.take(10, "request body")
        raise RuntimeError("the exchange failed")
    assert budget.used == 0


def test_a_budget_must_hold_something() -> None:
    with pytest.raises(ValueError, match="at least 1 byte"):
        BodyBudget(0)


@pytest.mark.parametrize(("max_body", "budget", "needed"), [
    (1000, 1999, 2000),  # a small max_body_bytes: a request and a response of that size, held whole
    (2 * 2**30, 2 * 2**20 - 1, 2 * 2**20),  # a large one: each body counts with the spool's threshold (1 MiB)
])
def test_a_budget_smaller_than_one_exchange_is_a_settings_error(max_body: int, budget: int, needed: int) -> None:
    s = Settings()
    server = dataclasses.replace(s.server, max_body_bytes=max_body, max_inflight_body_bytes=budget)
    with pytest.raises(ConfigError) as info:
        SecurityServer(dataclasses.replace(s, server=server))
    assert f"max_inflight_body_bytes ({budget}) is smaller than {needed} bytes" in info.value.message
    assert info.value.exit_code == 2


def test_a_large_max_body_is_allowed_with_a_modest_budget() -> None:
    s = Settings()
    server = dataclasses.replace(s.server, max_body_bytes=2 * 2**30, max_inflight_body_bytes=8 * 2**20)
    assert SecurityServer(dataclasses.replace(s, server=server)).port_limits.max_body_bytes == 2 * 2**30
