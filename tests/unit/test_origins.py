"""Log origin names (gateway.messagelog.origins): the scheme, its inverse, and every refusal."""

from __future__ import annotations

import pytest

from gateway.errors import ConfigError, TrustError
from gateway.identifiers import SecurityServerId
from gateway.messagelog.origins import (
    MAX_WORKERS,
    OriginName,
    check_node,
    is_origin_of,
    log_origin,
    parse_origin,
    server_of,
)

SS1 = SecurityServerId.parse("DEV/GOV/1001/ss1")


@pytest.mark.parametrize(("node", "worker", "origin"), [
    ("", 0, "DEV/GOV/1001/ss1"),
    ("", 1, "DEV/GOV/1001/ss1/1"),
    ("", 63, "DEV/GOV/1001/ss1/63"),
    ("node2", 0, "DEV/GOV/1001/ss1/node2"),
    ("node2", 3, "DEV/GOV/1001/ss1/node2/3"),
    ("a", 10, "DEV/GOV/1001/ss1/a/10"),
    ("n-1", 0, "DEV/GOV/1001/ss1/n-1"),
])
def test_scheme_and_its_inverse(node: str, worker: int, origin: str) -> None:
    assert log_origin(SS1, node=node, worker=worker) == origin
    assert parse_origin(origin) == OriginName(server=SS1, node=node, worker=worker)
    assert str(parse_origin(origin)) == origin
    assert server_of(origin) == "DEV/GOV/1001/ss1"
    assert is_origin_of(origin, SS1) and is_origin_of(origin, "DEV/GOV/1001/ss1")
    assert not is_origin_of(origin, "DEV/GOV/1001/ss2")


def test_every_name_of_a_node_and_worker_grid_is_distinct() -> None:
    """Injective: no two (node, worker) pairs share an origin (a node is never mistaken for a worker)."""
    names = [(n, w) for n in ("", "a", "node2", "w1", "n1") for w in range(MAX_WORKERS)]
    origins = {log_origin(SS1, node=n, worker=w) for n, w in names}
    assert len(origins) == len(names)
    for n, w in names:
        got = parse_origin(log_origin(SS1, node=n, worker=w))
        assert (got.node, got.worker) == (n, w)


@pytest.mark.parametrize(("node", "message"), [
    ("Node2", "not a node name"),  # upper case
    ("2node", "not a node name"),  # must start with a letter: a digit would read as a worker index
    ("node_2", "not a node name"),
    ("node/2", "not a node name"),
    ("x" * 33, "not a node name"),
    ("nöde", "not a node name"),
])
def test_bad_node_names_are_refused(node: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        check_node(node)
    with pytest.raises(ConfigError, match=message):
        log_origin(SS1, node=node)


@pytest.mark.parametrize("worker", [-1, MAX_WORKERS, 1000])
def test_worker_index_out_of_range(worker: int) -> None:
    with pytest.raises(ConfigError, match=r"worker index .* is outside 0\.\.63"):
        log_origin(SS1, worker=worker)


def test_too_long_an_origin_is_refused() -> None:
    long_server = SecurityServerId.parse("DEV/GOV/" + "m" * 200 + "/" + "s" * 40)
    with pytest.raises(ConfigError, match="longer than 255 characters"):
        log_origin(long_server, node="n" * 32, worker=1)


@pytest.mark.parametrize(("origin", "message"), [
    ("", "must be 1 to 255 characters"),
    ("x" * 256, "must be 1 to 255 characters"),
    ("DEV/GOV/1001", "does not begin with a security server"),
    ("DEV/GOV/1001/ss1 x", "does not begin with a security server"),
    ("DEV/GOV/1001/ss1/0", "neither a node name nor a worker index"),  # worker 0 has no suffix
    ("DEV/GOV/1001/ss1/01", "neither a node name nor a worker index"),
    ("DEV/GOV/1001/ss1/64", "neither a node name nor a worker index"),
    ("DEV/GOV/1001/ss1/1/node2", "neither a node name nor a worker index"),  # node comes first
    ("DEV/GOV/1001/ss1/node2/node3", "neither a node name nor a worker index"),
    ("DEV/GOV/1001/ss1/Node2", "neither a node name nor a worker index"),
    ("DEV/GOV/1001/ss1/node2/1/2", "neither a node name nor a worker index"),
])
def test_names_outside_the_scheme_are_refused(origin: str, message: str) -> None:
    with pytest.raises(TrustError, match=message):
        parse_origin(origin)
    assert not is_origin_of(origin, SS1)
