"""Test kit: run schemathesis (its command line, ``st run``, as a real process) against a running admin API.

One run per identity (:func:`check_api`): unauthenticated, then with an API key for each role. Each run is bounded
(:data:`MAX_EXAMPLES` cases per operation and phase) and deterministic (a fixed seed and schemathesis's
deterministic generation, no example database), so a failure found once is found every time.

Checks (schemathesis 4; docs "Checks"):

- ``not_a_server_error``: no 5xx;
- ``status_code_conformance``: every status is one the document declares for the operation;
- ``content_type_conformance``: the response's media type is the declared one;
- ``response_headers_conformance``: declared response headers are present and valid;
- ``response_schema_conformance``: every body matches its declared schema;
- ``positive_data_acceptance``: a request the schema allows is not refused; statuses that depend on state or on
  the caller rather than on the request's shape are accepted (:data:`STATE_STATUSES`);
- ``unsupported_method``: a method the document does not list for a path gets 405 with ``Allow``.

Phases: ``examples``, ``coverage`` (boundary values and every undeclared method of each path) and
``fuzzing``, in positive mode (requests the document allows). Negative data is left to the tests of bad input
(``test_admin_input.py``, ``test_central_admin_api.py``), which pin each message: schemathesis's negative
mode found only what aiohttp's HTTP parser answers itself, in plain text, before any middleware runs (a
request line over 8190 bytes gets ``400 Got more than 8190 bytes``).

Where a field's content is something no JSON Schema can describe (a DER certificate inside the PEM text, the
PIN of the software token), a well-formed request can still be refused with 400, rightly: for those operations
(:data:`CONTENT_CHECKED`) ``positive_data_acceptance`` also accepts 400; every other check runs unchanged.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gateway.admin.roles import Role
from gateway.admin.routes import Route

MAX_EXAMPLES = 2  # cases per operation in each phase; keeps the runs of one API under a minute
PARALLEL_RUNS = 3  # schemathesis processes at once (each waits on the server half of the time)
SEED = 12345
CHECKS = ("not_a_server_error", "status_code_conformance", "content_type_conformance",
          "response_headers_conformance", "response_schema_conformance", "positive_data_acceptance",
          "unsupported_method")
# Refusals of well-formed requests that depend on who asks or on what exists: not the schema's business.
STATE_STATUSES = ("2xx", "401", "403", "404", "409", "423", "429")
# operationId -> the field whose content only its parser can judge
CONTENT_CHECKED = {
    "importCertificate": "pem", "addIsCert": "pem", "loginToken": "pin", "changeTokenPin": "old_pin",
    "addAuthCert": "pem", "addCa": "pem", "addTsa": "pem",
    "setWitnessPolicy": "witnesses",  # a vkey's key ID, the quorum against the count, a name listed twice
}
RUN_TIMEOUT = 120.0  # seconds for one run; a run takes a few seconds


def _config(tmp: Path) -> Path:
    path = tmp / "schemathesis.toml"
    statuses = ", ".join(f'"{s}"' for s in STATE_STATUSES)
    path.write_text(
        "[generation]\ndeterministic = true\ndatabase = \"none\"\n\n"
        f"[checks.positive_data_acceptance]\nexpected-statuses = [{statuses}]\n"
        + "".join(f'\n[[operations]]\ninclude-operation-id = "{op}"\n'
                  f'checks.positive_data_acceptance.expected-statuses = [{statuses}, "400"]\n'
                  for op in sorted(CONTENT_CHECKED))
    )
    return path


async def check_api(
    document: dict[str, Any], routes: Sequence[Route], base_url: str, tmp: Path, keys: dict[Role, str],
) -> list[str]:
    """Run schemathesis unauthenticated (every operation: each must answer 401 as documented), then with each
    role's API key on the operations that role may call (the others answer 403, which the role tests of each
    API check one by one); returns the reports of the runs that failed."""
    runs: list[tuple[str, str | None, list[str] | None]] = [("nobody", None, None)]
    for role, key in keys.items():
        allowed = [r.operation_id for r in routes if r.public or role in r.roles]
        runs.append((role, f"X-Road-ApiKey token={key}", allowed))
    slots = asyncio.Semaphore(PARALLEL_RUNS)

    async def one(label: str, authorization: str | None, operations: list[str] | None) -> tuple[int, str]:
        run_dir = tmp / label
        run_dir.mkdir()
        async with slots:
            return await run_schemathesis(document, base_url, run_dir, authorization=authorization, label=label,
                                          operations=operations)

    results = await asyncio.gather(*(one(*run) for run in runs))
    for (label, _, operations), (_, output) in zip(runs, results, strict=True):
        # each run sent requests, and to every operation it was given
        generated = re.search(r"(\d+) generated", output)
        assert generated is not None and int(generated.group(1)) > 0, output
        tested = re.search(r"(\d+) passed", output)
        assert operations is None or (tested is not None and int(tested.group(1)) >= len(operations)) or \
            "failed" in output, (label, output)
    return [output for code, output in results if code != 0]


async def run_schemathesis(
    document: dict[str, Any], base_url: str, tmp: Path, *, authorization: str | None, label: str,
    operations: list[str] | None = None,
) -> tuple[int, str]:
    """Run ``st run`` against ``base_url`` with ``document`` (only ``operations``, by operation id, if given);
    returns its exit code and its output."""
    doc_path = tmp / "openapi.json"
    doc_path.write_text(json.dumps(document))
    st = Path(sys.executable).with_name("st")
    args = [
        str(st), "--config-file", str(_config(tmp)), "run", str(doc_path), "--url", base_url,
        "--checks", ",".join(CHECKS), "--phases", "examples,coverage,fuzzing", "--mode", "positive",
        "--max-examples", str(MAX_EXAMPLES),
        "--seed", str(SEED), "--generation-deterministic", "--workers", "1", "--no-color",
        "--suppress-health-check", "all", "--request-timeout", "10", "--output-truncate", "false",
    ]
    if authorization is not None:
        args += ["--header", f"Authorization: {authorization}"]
    for operation in operations or ():
        args += ["--include-operation-id", operation]
    proc = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, cwd=tmp,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=RUN_TIMEOUT)
    assert proc.returncode is not None
    return proc.returncode, f"--- schemathesis as {label} ---\n" + out.decode(errors="replace")
