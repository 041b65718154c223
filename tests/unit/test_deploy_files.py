"""deploy/ and the Dockerfile, checked offline (no Docker engine or cluster runs here):

- the ``Dockerfile`` (parsed with dockerfile-parse) against the rules the deployment relies on: several stages,
  every base image pinned to a full version, the final stage running as a non-root user, no compiler or build
  tool installed or copied into the final stage, a HEALTHCHECK, an exec-form ENTRYPOINT;
- ``deploy/compose/compose.yaml`` against the Compose Specification's JSON schema (the copy vendored in
  check-jsonschema, Apache-2.0), and what it must say: PostgreSQL, images built from the Dockerfile, the
  set-up first; its settings files load as real settings, and every ``gateway`` command of its set-up script
  parses with the real command-line parser;
- ``deploy/kubernetes/*.yaml`` against the Kubernetes schemas (kubernetes-validate, strict: unknown fields are
  errors), and what they must say: probes on /healthz and /readyz, resource requests, non-root, a read-only root
  filesystem with writable volumes where the server writes, the token PIN from a Secret.
"""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from dockerfile_parse import DockerfileParser

from gateway.cli import build_parser
from gateway.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "deploy" / "compose"
KUBE = ROOT / "deploy" / "kubernetes"
K8S_VERSION = "1.30.0"  # the oldest Kubernetes release still supported upstream when these were written
# A base image is pinned: a digest, or a tag naming the full version (python:3.11.10-slim-bookworm)
PINNED = re.compile(r"[^:@\s]+(@sha256:[0-9a-f]{64}|:\d+\.\d+\.\d+[-\w.]*(@sha256:[0-9a-f]{64})?)")
BUILD_TOOLS = re.compile(r"\b(build-essential|gcc|g\+\+|clang|make|cmake|cc|libc6-dev|[\w.+-]+-dev|pip install)\b")

# ---- Dockerfile -------------------------------------------------------------------------------------------


def _stages() -> list[list[dict[str, Any]]]:
    stages: list[list[dict[str, Any]]] = []
    for ins in DockerfileParser(str(ROOT / "Dockerfile")).structure:
        if ins["instruction"] == "FROM":
            stages.append([])
        if ins["instruction"] != "COMMENT":
            assert stages, "an instruction before the first FROM"
            stages[-1].append(ins)
    return stages


def _values(stage: list[dict[str, Any]], instruction: str) -> list[str]:
    return [i["value"] for i in stage if i["instruction"] == instruction]


def test_dockerfile_is_multi_stage_with_pinned_bases() -> None:
    stages = _stages()
    assert len(stages) >= 2
    for stage in stages:
        image = stage[0]["value"].split()[0]
        assert PINNED.fullmatch(image), f"base image {image} is not pinned to a full version or digest"
        assert not image.endswith(":latest")
    assert re.search(r"\bAS build\b", stages[0][0]["value"])


def test_dockerfile_final_stage_runs_as_non_root_with_a_healthcheck() -> None:
    final = _stages()[-1]
    users = _values(final, "USER")
    assert users, "the final stage sets no USER (it would run as root)"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0") and int(user) > 0
    later = final[[i["instruction"] for i in final].index("USER") + 1:]  # nothing runs as root after USER
    assert not [i for i in later if i["instruction"] == "USER" and i["value"].split(":")[0] in ("root", "0")]
    [health] = _values(final, "HEALTHCHECK")
    assert "CMD" in health and "NONE" not in health.split()
    [entry] = _values(final, "ENTRYPOINT")
    assert json.loads(entry) == ["gateway"]  # exec form: the server is PID 1 and gets SIGTERM itself


def test_dockerfile_final_stage_has_no_build_tools() -> None:
    stages = _stages()
    build, final = stages[0], stages[-1]
    assert any(BUILD_TOOLS.search(v) for v in _values(build, "RUN")), "the build stage should do the building"
    for run in _values(final, "RUN"):
        assert not BUILD_TOOLS.search(run), f"the final stage installs build tools: {run}"
    for copy in _values(final, "COPY"):
        assert copy.startswith("--from=build /opt/gateway/venv "), f"the final stage copies more than the venv: {copy}"


def test_dockerfile_copies_what_the_repository_has() -> None:
    for copy in _values(_stages()[0], "COPY"):
        *sources, _dest = copy.split()
        for src in sources:
            assert (ROOT / src).exists(), src
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    for needed in ("!pyproject.toml", "!README.md", "!gateway/", "!adapters/"):
        assert needed in ignored


# ---- Compose ----------------------------------------------------------------------------------------------


def _compose_schema() -> dict[str, Any]:
    vendor = resources.files("check_jsonschema") / "builtin_schemas" / "vendor" / "compose-spec.json"
    schema: dict[str, Any] = json.loads(vendor.read_text())
    return schema


def _compose() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((COMPOSE / "compose.yaml").read_text())
    return doc


def test_compose_file_is_valid_against_the_compose_specification() -> None:
    schema = _compose_schema()
    jsonschema.validators.validator_for(schema).check_schema(schema)
    validator = jsonschema.validators.validator_for(schema)(schema, format_checker=jsonschema.FormatChecker())
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(_compose())]
    assert errors == []


def test_compose_schema_catches_a_mistake() -> None:
    doc = _compose()
    doc["services"]["ss1"]["depends_on"]["central"]["condition"] = "service_ready"  # no such condition
    doc["services"]["ss2"]["restart_policy"] = "always"  # no such key
    schema = _compose_schema()
    errors = list(jsonschema.validators.validator_for(schema)(schema).iter_errors(doc))
    assert len(errors) >= 2


def test_compose_federation_of_two_agencies_on_postgresql() -> None:
    services = _compose()["services"]
    assert {"postgres", "setup", "pki", "central", "adapters", "ss1", "ss2"} <= set(services)
    assert services["postgres"]["image"].startswith("postgres:16.")
    for name in ("setup", "pki", "central", "adapters", "ss1", "ss2"):
        s = services[name]
        assert s["build"] == {"context": "../..", "dockerfile": "Dockerfile"}, name
        assert (COMPOSE / s["build"]["context"] / "Dockerfile").resolve() == ROOT / "Dockerfile"
        assert s["read_only"] is True and s["cap_drop"] == ["ALL"], name
        for key, url in s.get("environment", {}).items():
            if key.endswith("DATABASE_URL"):
                assert url.startswith("postgresql+asyncpg://") and "${POSTGRES_PASSWORD" in url, (name, key)
        if name != "setup":
            assert s["depends_on"], name
    assert services["setup"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("pki", "central", "adapters"):
        assert services[name]["depends_on"]["setup"]["condition"] == "service_completed_successfully"
    for name in ("ss1", "ss2"):
        assert services[name]["command"] == ["-c", f"/etc/gateway/{name}.toml", "server", "serve"]
    assert "CREATE DATABASE ss1" in (COMPOSE / "initdb.sql").read_text()


def _load(path: Path, tmp: Path, **env: str) -> Any:
    """``path`` as the settings of a running part."""
    return load_settings(str(path), env)


def test_compose_settings_files_load(tmp_path: Path) -> None:
    central = _load(COMPOSE / "config" / "central.toml", tmp_path,
                    GATEWAY_CENTRAL__DATABASE_URL="postgresql+asyncpg://gateway:pw@postgres/central")
    assert central.central.public_url == "http://central:4100"
    for n in (1, 2):
        s = _load(COMPOSE / "config" / f"ss{n}.toml", tmp_path,
                  GATEWAY_SERVER__DATABASE_URL=f"postgresql+asyncpg://gateway:pw@postgres/ss{n}").server
        assert (s.id, s.address, s.server_port) == (f"DEV/GOV/100{n}/ss{n}", f"ss{n}:5500", 5500)
        assert s.state_dir.startswith("/var/lib/gateway/")


def _setup_commands() -> list[list[str]]:
    """Each ``gateway ...`` command line of setup.sh (continuations joined, shell variables given values)."""
    text = (COMPOSE / "config" / "setup.sh").read_text().replace("\\\n", " ")
    values = {"$C": "-c /etc/gateway/central.toml", "$S2": "-c /etc/gateway/ss2.toml",
              "$S": "-c /etc/gateway/ss1.toml"}
    out = []
    for line in text.splitlines():
        line = line.split("#", 1)[0] if not line.lstrip().startswith("[") else line.split("||", 1)[-1]
        m = re.search(r"\bgateway (.*)$", line)
        if m is None or line.lstrip().startswith("echo"):
            continue
        cmd = m.group(1)
        for var, value in values.items():
            cmd = cmd.replace(var + " ", value + " ")
        cmd = re.sub(r"\$\{?(\w+)\}?", "X", cmd)
        out.append(shlex.split(cmd))
    return out


def test_compose_setup_script_commands_parse() -> None:
    commands = _setup_commands()
    assert len(commands) >= 20
    parser = build_parser()
    for argv in commands:
        try:
            parser.parse_args(argv)
        except SystemExit as e:  # argparse's way of saying "bad arguments"
            raise AssertionError(f"setup.sh: gateway {shlex.join(argv)} does not parse") from e
    wanted = {("pki", "init"), ("central", "init"), ("server", "init"), ("server", "import-cert"),
              ("central", "publish"), ("serverconf", "access")}
    found = {tuple(a for a in argv if not a.startswith("-") and "/" not in a)[:2] for argv in commands}
    assert wanted <= found, wanted - found


# ---- Kubernetes -------------------------------------------------------------------------------------------


def _manifests() -> list[tuple[str, dict[str, Any]]]:
    return [(f.name, doc) for f in sorted(KUBE.glob("*.yaml")) for doc in yaml.safe_load_all(f.read_text()) if doc]


def _kind(kind: str, name: str) -> dict[str, Any]:
    return next(d for _, d in _manifests() if d["kind"] == kind and d["metadata"]["name"] == name)


@pytest.mark.parametrize(("file", "doc"), _manifests(), ids=[f"{f}:{d['kind']}/{d['metadata']['name']}"
                                                             for f, d in _manifests()])
def test_kubernetes_manifest_is_valid(file: str, doc: dict[str, Any]) -> None:
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_kubernetes_validation_catches_a_mistake() -> None:
    deployment = _kind("Deployment", "ss1")
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}  # misspelt
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)


def test_kubernetes_security_server_is_probed_bounded_and_locked_down() -> None:
    pod = _kind("Deployment", "ss1")["spec"]["template"]["spec"]
    [c] = pod["containers"]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "ops"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "ops"}
    assert c["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert {"cpu", "memory"} <= set(c["resources"]["requests"])
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 10001
    assert c["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                    "capabilities": {"drop": ["ALL"]}}
    settings = tomllib.loads(_kind("ConfigMap", "ss1-settings")["data"]["ss1.toml"])["server"]
    assert ports["ops"] == settings["ops_port"] and ports["peers"] == settings["server_port"]
    # every place the server writes is a volume: state (token, keys), the configuration cache, /tmp
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    conf = tomllib.loads(_kind("ConfigMap", "ss1-settings")["data"]["ss1.toml"])
    for path in (settings["state_dir"], settings["token_dir"], conf["globalconf"]["cache_dir"], "/tmp"):
        mount = next(m for p, m in mounts.items() if path == p or path.startswith(p + "/"))
        assert not mount.get("readOnly") and ("emptyDir" in volumes[mount["name"]]
                                              or "persistentVolumeClaim" in volumes[mount["name"]]), path
    # the token PIN and the database URL from the Secret, never in the manifest
    env = {e["name"]: e for e in c["env"]}
    assert env[settings["token_pin_env"]]["valueFrom"]["secretKeyRef"] == {"name": "ss1-secrets", "key": "token-pin"}
    assert env["GATEWAY_SERVER__DATABASE_URL"]["valueFrom"]["secretKeyRef"]["name"] == "ss1-secrets"
    secret = _kind("Secret", "ss1-secrets")["stringData"]
    assert {"token-pin", "postgres-password", "database-url"} == set(secret)
    postgres = _kind("StatefulSet", "ss1-postgres")["spec"]["template"]["spec"]
    assert postgres["securityContext"]["runAsNonRoot"] is True
    assert postgres["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True


def test_kubernetes_settings_load(tmp_path: Path) -> None:
    path = tmp_path / "configmap" / "ss1.toml"
    path.parent.mkdir()
    path.write_text(_kind("ConfigMap", "ss1-settings")["data"]["ss1.toml"])
    s = _load(path, tmp_path, GATEWAY_SERVER__DATABASE_URL="postgresql+asyncpg://gateway:pw@ss1-postgres/ss1")
    assert (s.server.id, s.server.token_pin_env) == ("DEV/GOV/1001/ss1", "TOKEN_PIN")
