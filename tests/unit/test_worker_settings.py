"""``[server] workers``, ``node`` and the ops settings (ops port, OCSP timing, database timeouts, readiness
margins): what a security server process refuses before it opens anything, and the log origin it derives
(gateway.server.runtime, gateway.messagelog.origins)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from gateway.errors import ConfigError
from gateway.server.runtime import SecurityServer
from gateway.settings import ServerSettings, Settings, load_settings


def _settings(**server: Any) -> Settings:
    return Settings(server=dataclasses.replace(ServerSettings(), **server))


@pytest.mark.parametrize(("server", "worker", "origin"), [
    ({}, 0, "DEV/GOV/1001/ss1"),
    ({"workers": 4}, 3, "DEV/GOV/1001/ss1/3"),
    ({"node": "node2"}, 0, "DEV/GOV/1001/ss1/node2"),
    ({"node": "node2", "workers": 2}, 1, "DEV/GOV/1001/ss1/node2/1"),
])
def test_origin_of_a_process(server: dict[str, object], worker: int, origin: str) -> None:
    assert SecurityServer(_settings(**server), worker=worker).origin == origin


@pytest.mark.parametrize(("server", "worker", "message"), [
    ({"workers": 0}, 0, r"\[server\] workers = 0 is outside 1\.\.64"),
    ({"workers": 65}, 0, r"\[server\] workers = 65 is outside 1\.\.64"),
    ({"workers": 2}, 2, r"worker index 2 is outside 0\.\.1"),
    ({}, 1, r"worker index 1 is outside 0\.\.0"),
    ({}, -1, r"worker index -1 is outside 0\.\.0"),
    ({"node": "Node 2"}, 0, r"\[server\] node 'Node 2' is not a node name"),
    ({"node": "7"}, 0, r"\[server\] node '7' is not a node name"),
    ({"ops_port": 65536}, 0, r"\[server\] ops_port = 65536 is not a TCP port \(0-65535\) or -1 \(off\)"),
    ({"ops_port": -2}, 0, r"\[server\] ops_port = -2 is not a TCP port"),
    ({"ocsp_timeout_seconds": 0.0}, 0, r"\[server\] ocsp_timeout_seconds = 0.0 must be a positive number"),
    ({"ocsp_refresh_seconds": -1.0}, 0, r"\[server\] ocsp_refresh_seconds = -1.0 must be a positive number"),
    ({"readiness_grace_margin_seconds": -5.0}, 0,
     r"\[server\] readiness_grace_margin_seconds = -5.0 must be 0 or more seconds"),
    ({"opmon_retention_days": 0}, 0, r"\[server\] opmon_retention_days = 0 is outside 1\.\.36500"),
    ({"opmon_queue_records": 0}, 0, r"\[server\] opmon_queue_records = 0 is outside 1\.\.10000000"),
    ({"opmon_batch_records": 1001}, 0, r"\[server\] opmon_batch_records = 1001 is outside 1\.\.1000"),
    ({"opmon_batch_seconds": 1.5}, 0, r"\[server\] opmon_batch_seconds = 1.5 is outside 0\.\.1 seconds"),
    ({"opmon_batch_seconds": -0.1}, 0, r"\[server\] opmon_batch_seconds = -0.1 is outside 0\.\.1 seconds"),
    ({"database_connect_timeout_seconds": 0.0}, 0,
     r"\[server\] database_connect_timeout_seconds = 0.0 must be a positive number of seconds"),
    ({"database_statement_timeout_seconds": -1.0}, 0,
     r"\[server\] database_statement_timeout_seconds = -1.0 must be a positive number of seconds"),
    ({"readiness_disk_free_bytes": -1}, 0,
     r"\[server\] readiness_disk_free_bytes = -1 must be 0 or more bytes \(0: not checked\)"),
])
def test_bad_worker_settings_refused(server: dict[str, object], worker: int, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        SecurityServer(_settings(**server), worker=worker)


def test_settings_keys_from_the_environment() -> None:
    s = load_settings(None, {"GATEWAY_SERVER__WORKERS": "3", "GATEWAY_SERVER__NODE": "node2"})
    assert (s.server.workers, s.server.node) == (3, "node2")
    with pytest.raises(ConfigError, match="key 'workers': expected an integer"):
        load_settings(None, {"GATEWAY_SERVER__WORKERS": "many"})


def test_bad_central_ops_port_refused() -> None:
    from gateway.central import check_settings
    from gateway.settings import CentralSettings

    with pytest.raises(ConfigError, match=r"\[central\] key 'ops_port': 70000 is not a TCP port"):
        check_settings(dataclasses.replace(CentralSettings(), ops_port=70000))
