"""``gateway demo --processes``: each part of the demo federation as a process of its own (I/O).

The federation is first set up in the demo's own process exactly as without the option
(:func:`gateway.dev.demo.start_federation`: keys, certificates, registration, access rights), on ports the
operating system picks. Then :func:`hand_over` stops those in-process parts and starts each again as the
``gateway`` command an operator would run, on the same ports, with the settings files the demo wrote:

| part | command |
|---|---|
| ``pki`` | ``gateway pki serve --dir DIR/pki --host 127.0.0.1 --ocsp-port P --tsa-port Q`` |
| ``central`` | ``gateway -c DIR/central.toml central serve`` |
| ``adapters`` | ``gateway adapter serve --config DIR/registries/adapters.toml --host 127.0.0.1 --port P`` |
| each server (its id) | ``gateway -c DIR/<code>.toml server serve`` |
| ``portal`` | ``gateway -c DIR/portal.toml portal serve`` |

The portal's development identity provider (:mod:`gateway.dev.idp`, which has no command of its own) stays in
the demo's process, on its port: the portal's process signs citizens in through it. Each part's output goes to
``DIR/logs/<name>.log``. Its process id and command line go into
``federation.json`` (``processes``), so that an operator or a test can stop, kill or restart one part: the
same command on the same settings gets the same ports back. Every part keeps the demo's directory lock open
(:class:`gateway.dev.demo.DemoLock`), so the directory stays held while any part runs, even if the demo's
own process was killed. On SIGINT/SIGTERM the demo stops the parts it started and that still run, the portal
and the security servers first (client-facing ports, then their logs flush), then the adapters, the central
server and the PKI.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

import aiohttp
import structlog

from gateway.dev.demo import Federation, write_settings
from gateway.errors import ConfigError
from gateway.files import private_dir
from gateway.settings import GlobalConfSettings, PkiSettings, Settings

log = structlog.get_logger("gateway.dev.processes")

READY_TIMEOUT_SECONDS = 60.0  # for one part to print that it listens, and then to be ready
READY_POLL_SECONDS = 0.1  # between two asks of a part's /readyz
STOP_TIMEOUT_SECONDS = 30.0  # from SIGTERM to exit, then SIGKILL


@dataclass(kw_only=True)
class Part:
    """One part of the federation run as a process: its name, command, log file and readiness line."""

    name: str  # "pki", "central", "adapters" or a security server's id
    argv: list[str]
    log: Path
    ready: str  # the start of the line the command prints once it listens
    proc: asyncio.subprocess.Process | None = None
    _drain: asyncio.Task[None] | None = None

    def describe(self) -> dict[str, Any]:
        assert self.proc is not None
        return {"pid": self.proc.pid, "argv": self.argv, "log": str(self.log)}


def _port(url: str) -> int:
    port = urlsplit(url if "//" in url else f"//{url}").port
    assert port is not None, url
    return port


def gateway_command(*args: str) -> list[str]:
    """A ``gateway`` command line with this interpreter (the virtual environment the demo runs in)."""
    return [sys.executable, "-m", "gateway", *args]


def plan(fed: Federation) -> list[Part]:
    """The parts of ``fed`` as commands, in start order; rewrites each server's settings file with the ports
    it listens on now, so that its process gets the same ones (the central registry names them)."""
    w = fed.workdir
    logs = private_dir(w / "logs")
    parts = [Part(
        name="pki", ready="TSA: ", log=logs / "pki.log",
        argv=gateway_command("pki", "serve", "--dir", str(w / "pki"), "--host", "127.0.0.1",
                             "--ocsp-port", str(_port(fed.pki.ocsp_url)), "--tsa-port", str(_port(fed.pki.tsa_url))),
    ), _central_part(fed, logs)]
    if fed.adapters is not None:
        parts.append(Part(
            name="adapters", ready="adapters listening on ", log=logs / "adapters.log",
            argv=gateway_command("adapter", "serve", "--config", str(w / "registries" / "adapters.toml"),
                                 "--host", "127.0.0.1", "--port", str(_port(fed.adapters.base_url))),
        ))
    for spec in fed.specs:
        ss = fed.servers[spec.id]
        code = spec.id.server_code
        server = dataclasses.replace(
            ss.settings.server,
            client_port=_port(ss.client_url), server_port=_port(ss.server_address),
            client_https_port=_port(ss.client_https_url) if ss.client_https_url else -1,
            admin_port=_port(ss.admin_url) if ss.admin_url else -1,
            ops_port=_port(ss.ops_url) if ss.ops_url else -1,
        )
        write_settings(w / f"{code}.toml", dataclasses.replace(ss.settings, server=server))
        parts.append(Part(
            name=str(spec.id), ready="security server ", log=logs / f"{code}.log",
            argv=gateway_command("-c", str(w / f"{code}.toml"), "server", "serve"),
        ))
    if fed.portal is not None:
        parts.append(_portal_part(fed, logs))
    return parts


def _portal_part(fed: Federation, logs: Path) -> Part:
    """The citizen portal as ``gateway portal serve`` on the port it listens on now (the identity provider has
    its redirect URI), with the settings it was started with in ``portal.toml``: its ``[portal]`` and a
    ``[globalconf]`` of its own (the anchor, its cache directory)."""
    w = fed.workdir
    assert fed.portal is not None
    running = fed.portal.running
    portal = dataclasses.replace(running.portal.settings, port=_port(running.url), public_url=running.url,
                                 client=str(fed.portal.client))
    globalconf = GlobalConfSettings(anchor=str(fed.anchor_path.resolve()),
                                    cache_dir=str((w / "portal" / "globalconf").resolve()))
    write_settings(w / "portal.toml", Settings(portal=portal, globalconf=globalconf),
                   sections={"portal": None, "globalconf": None})
    return Part(
        name="portal", ready="portal listening on ", log=logs / "portal.log",
        argv=gateway_command("-c", str(w / "portal.toml"), "portal", "serve"),
    )


def _central_part(fed: Federation, logs: Path) -> Part:
    """The central server as a command on the ports it listens on now: its own and its ops port in
    ``central.toml``, its admin API's (whose users the demo created in the central database) as an argument."""
    w = fed.workdir
    central = dataclasses.replace(fed.central.settings,
                                  ops_port=_port(fed.central.ops_url) if fed.central.ops_url else -1)
    write_settings(w / "central.toml", Settings(central=central, pki=PkiSettings(dir=str(w / "pki"))),
                   sections={"central": None, "pki": ("dir",)})
    admin = [] if fed.central_admin is None else ["--admin-port", str(_port(fed.central_admin.url))]
    return Part(
        name="central", ready="central server listening on ", log=logs / "central.log",
        argv=gateway_command("-c", str(w / "central.toml"), "central", "serve", *admin),
    )


async def _copy(stream: asyncio.StreamReader, out: IO[bytes]) -> None:
    while chunk := await stream.read(65536):
        out.write(chunk)
        out.flush()


async def start_part(part: Part, *, keep_fds: tuple[int, ...] = ()) -> None:
    """Start ``part`` and return once it printed its readiness line.

    Raises:
        ConfigError: it exited first, or did not get ready within :data:`READY_TIMEOUT_SECONDS`.
    """
    out = part.log.open("ab")
    try:
        proc = await asyncio.create_subprocess_exec(
            *part.argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=out,
            pass_fds=keep_fds,
        )
        part.proc = proc
        assert proc.stdout is not None
        try:
            async with asyncio.timeout(READY_TIMEOUT_SECONDS):
                while line := await proc.stdout.readline():
                    out.write(line)
                    if line.decode("utf-8", "replace").startswith(part.ready):
                        break
                else:
                    await proc.wait()
                    raise ConfigError(f"demo part {part.name} exited with status {proc.returncode} before it "
                                      f"listened; see {part.log}")
        except TimeoutError:
            raise ConfigError(f"demo part {part.name} did not listen within {READY_TIMEOUT_SECONDS:g} s; "
                              f"see {part.log}") from None
    except BaseException:
        await stop_part(part)
        out.close()
        raise
    out.flush()
    part._drain = asyncio.create_task(_drain_and_close(proc.stdout, out))


async def _drain_and_close(stream: asyncio.StreamReader, out: IO[bytes]) -> None:
    try:
        await _copy(stream, out)
    finally:
        out.close()


async def stop_part(part: Part) -> None:
    """SIGTERM, then SIGKILL after :data:`STOP_TIMEOUT_SECONDS`; nothing if it is not running."""
    proc = part.proc
    if proc is None:
        return
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), STOP_TIMEOUT_SECONDS)
        except TimeoutError:
            log.warning("demo part did not stop, killing it", part=part.name, pid=proc.pid)
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
    if part._drain is not None:
        await part._drain
    if proc.returncode not in (0, -signal.SIGTERM):
        log.warning("demo part ended", part=part.name, pid=proc.pid, status=proc.returncode)


async def hand_over(fed: Federation) -> list[Part]:
    """Stop the in-process parts of ``fed`` and start each as a process (module docstring); the running parts,
    in start order.

    Raises:
        ConfigError: a part did not start (those started are stopped again).
    """
    parts = plan(fed)
    await fed.stop_parts(keep_identity_provider=True)  # a development stand-in: it stays in the demo's process
    keep = () if fed.lock is None else (fed.lock.fd,)
    started: list[Part] = []
    try:
        for part in parts:
            await start_part(part, keep_fds=keep)
            started.append(part)
        desc = fed.describe()
        await wait_ready([desc["central"], *desc["servers"]])
    except BaseException:
        await stop_parts(started)
        raise
    return parts


async def wait_ready(parts: list[dict[str, Any]]) -> None:
    """Until each part's ``readiness_url`` (``/readyz`` on its ops port) answers 200: a part process that
    listens may still be fetching its first OCSP responses, and ``federation.json`` promises parts that answer.

    Raises:
        ConfigError: a part was not ready within :data:`READY_TIMEOUT_SECONDS`, naming what it said last.
    """
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
        for part in parts:
            url = part.get("readiness_url")
            if not url:
                continue
            last = "no answer"
            try:
                async with asyncio.timeout(READY_TIMEOUT_SECONDS):
                    while True:
                        try:
                            async with http.get(url) as resp:
                                if resp.status == 200:
                                    break
                                last = f"HTTP {resp.status}: {(await resp.text())[:300]}"
                        except aiohttp.ClientError as e:
                            last = f"{type(e).__name__}: {e}"
                        await asyncio.sleep(READY_POLL_SECONDS)
            except TimeoutError:
                name = part.get("id", "central server")
                raise ConfigError(f"demo part {name} was not ready within {READY_TIMEOUT_SECONDS:g} s; "
                                  f"its readiness said {last}") from None


async def stop_parts(parts: list[Part]) -> None:
    """Stop the parts in reverse start order: security servers first, the PKI last."""
    for part in reversed(parts):
        await stop_part(part)


def describe(parts: list[Part]) -> dict[str, Any]:
    """``federation.json`` ``processes``: for each part its ``pid``, ``argv`` (the command that starts it again)
    and ``log`` (docs/demo.md)."""
    return {p.name: p.describe() for p in parts}


__all__ = ["Part", "describe", "gateway_command", "hand_over", "plan", "start_part", "stop_part", "stop_parts"]
