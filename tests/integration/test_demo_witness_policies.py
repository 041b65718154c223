"""The demo federation's witness policies (``start_federation(witness=True, witness_policies=True)``, what
``gateway demo`` runs): set in the central registry once both witness keys are known, published, read by each
security server; ss1 pushes a real checkpoint to the witness its published policy names, at the URL it gives,
over mutual TLS, and gets a cosignature that verifies with the policy's key."""

from __future__ import annotations

import base64
from pathlib import Path

import aiohttp
import pytest
from exchange_kit import auth_ssl, call

from gateway.central import registry
from gateway.dev.demo import start_federation
from gateway.trust.cosignature import parse_line, verify

pytestmark = pytest.mark.integration

PERSONS = "DEV/GOV/1002/registry/persons"


async def test_each_server_witnessed_by_the_other_agency(tmp_path: Path) -> None:
    fed = await start_federation(tmp_path / "fed", witness=True, witness_policies=True,
                                 server_overrides={"checkpoint_interval_seconds": 3600.0})
    try:
        ss1, ss2 = fed.server("ss1"), fed.server("ss2")
        assert ss1.witness is not None and ss2.witness is not None and ss1.context is not None
        # (1) the registry and every server's configuration: ss1 witnessed by ss2 and ss2 by ss1, quorum 1
        assert [(str(p.server), p.quorum, [str(w.server) for w in p.witnesses])
                for p in await registry.list_witness_policies(fed.central.engine)] == [
            (str(ss1.server_id), 1, [str(ss2.server_id)]), (str(ss2.server_id), 1, [str(ss1.server_id)])]
        for ss in (ss1, ss2):
            assert ss.context is not None
            conf = ss.context.conf()
            for logger, witness in ((ss1, ss2), (ss2, ss1)):
                policy = conf.witness_policy(logger.server_id)
                assert witness.witness is not None and policy is not None
                [w] = policy.witnesses
                assert (w.key, w.url) == (witness.witness.signer.key, f"https://{witness.server_address}/witness")
        # (2) ss1's real checkpoint, pushed where its published policy says, is cosigned by that witness
        [w] = ss1.context.conf().witness_policy(ss1.server_id).witnesses  # type: ignore[union-attr]
        assert (await call(ss1, f"{PERSONS}/?limit=1")).status == 200
        assert ss1.checkpointer is not None
        await ss1.checkpointer.run_once(ss1.clock(), force=True)
        cp = await ss1.messagelog.latest_checkpoint(ss1.context.origin)
        assert cp is not None
        async with aiohttp.ClientSession() as http, http.post(
            f"{w.url}/add-checkpoint", data=b"old 0\n\n" + cp.note, ssl=auth_ssl(ss1, fed.ca),
            headers={"X-Gateway-Log-Certificate": base64.b64encode(cp.signing_cert).decode()},
        ) as resp:
            body = await resp.read()
            assert resp.status == 200, body
        cosig = parse_line(body.decode().splitlines()[0])
        assert cosig.name == w.name
        verify(cosig, cp.note.split(b"\n\n", 1)[0] + b"\n", w.key)
    finally:
        await fed.close()
