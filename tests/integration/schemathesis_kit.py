"""Test kit: run schemathesis (its command line, ``st run``, as a real process) against a running admin API.

One run per identity: unauthenticated, then with an API key for each role. Each run is bounded
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
``fuzzing`` (generated positive data). Negative data (``negative_data_rejection``) is not run: some rules are
stated more strictly in the schema than the server enforces them (a documented key id format, say), and a
server that accepts such a request does nothing wrong.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

MAX_EXAMPLES = 4  # cases per operation in each phase; keeps one run of an API well under a minute
SEED = 12345
CHECKS = ("not_a_server_error", "status_code_conformance", "content_type_conformance",
          "response_headers_conformance", "response_schema_conformance", "positive_data_acceptance",
          "unsupported_method")
# Refusals of well-formed requests that depend on who asks or on what exists: not the schema's business.
STATE_STATUSES = ("2xx", "401", "403", "404", "409", "423", "429")
RUN_TIMEOUT = 120.0  # seconds for one run; a run takes a few seconds


def _config(tmp: Path) -> Path:
    path = tmp / "schemathesis.toml"
    statuses = ", ".join(f'"{s}"' for s in STATE_STATUSES)
    path.write_text(
        "[generation]\ndeterministic = true\ndatabase = \"none\"\n\n"
        f"[checks.positive_data_acceptance]\nexpected-statuses = [{statuses}]\n"
    )
    return path


async def run_schemathesis(
    document: dict[str, Any], base_url: str, tmp: Path, *, authorization: str | None, label: str,
) -> tuple[int, str]:
    """Run ``st run`` against ``base_url`` with ``document``; returns its exit code and its output."""
    doc_path = tmp / "openapi.json"
    doc_path.write_text(json.dumps(document))
    st = Path(sys.executable).with_name("st")
    args = [
        str(st), "--config-file", str(_config(tmp)), "run", str(doc_path), "--url", base_url,
        "--checks", ",".join(CHECKS), "--phases", "examples,coverage,fuzzing", "--max-examples", str(MAX_EXAMPLES),
        "--seed", str(SEED), "--generation-deterministic", "--workers", "1", "--no-color",
        "--suppress-health-check", "all", "--request-timeout", "10", "--output-truncate", "false",
    ]
    if authorization is not None:
        args += ["--header", f"Authorization: {authorization}"]
    proc = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, cwd=tmp,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=RUN_TIMEOUT)
    assert proc.returncode is not None
    return proc.returncode, f"--- schemathesis as {label} ---\n" + out.decode(errors="replace")
