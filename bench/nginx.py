"""The nginx chain of the exchange benchmark: two nginx instances, mutual TLS between them.

``bench/exchange.py`` starts two instances of Debian's ``nginx`` binary (``apt-get install nginx``; the bench
never installs it), each its own process tree with its own prefix directory, configuration, error log and
temporary paths, never the system's service:

    nginx -p PREFIX -c PREFIX/nginx.conf -e PREFIX/error.log

with ``daemon off``, one worker process, no access log. The first instance accepts plain HTTP and proxies over
TLS 1.3 with a client certificate (``proxy_ssl_certificate``) to the second, checking the second's
certificate (``proxy_ssl_verify``); the second accepts TLS 1.3 only with a client certificate from the same CA
(``ssl_verify_client on``) and proxies over plain HTTP to the service. Both keep their upstream connections
alive (``keepalive`` in the ``upstream`` block, HTTP/1.1, ``Connection`` cleared) and keep client connections
alive for as many requests as come. The certificates are those of ``relay.write_mtls_files``, copied into each
prefix.

When the bench runs as root, nginx runs as ``nobody``/``nogroup`` (the prefix handed over to that user), so
that the instances are unprivileged processes whichever user starts the bench; otherwise it runs as that
user.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from relay import SERVER_NAME, MtlsFiles

INSTALL_HINT = "apt-get install nginx"
UNPRIVILEGED = ("nobody", "nogroup")  # who nginx runs as when the bench runs as root


def find_nginx() -> str | None:
    """The nginx binary on PATH or in /usr/sbin (Debian's place, often not on a user's PATH), or None."""
    found = shutil.which("nginx")
    if found is None and os.access("/usr/sbin/nginx", os.X_OK):
        found = "/usr/sbin/nginx"
    return found


def version(binary: str) -> str:
    """``nginx -v``'s answer, e.g. ``nginx/1.22.1``."""
    out = subprocess.run([binary, "-v"], capture_output=True, text=True, timeout=10, check=False)
    return (out.stderr or out.stdout).strip().removeprefix("nginx version: ")


@dataclass(frozen=True, slots=True, kw_only=True)
class Instance:
    """One configured nginx instance: how to start it and where it writes."""

    name: str
    prefix: Path
    port: int
    command: list[str]
    error_log: Path
    user: str | None  # run as this user (and UNPRIVILEGED's group), or as the bench's own user


def configure(
    binary: str, prefix: Path, *, name: str, port: int, upstream_port: int, tls: MtlsFiles,
    serve_tls: bool, upstream_tls: bool,
) -> Instance:
    """Write the prefix directory and configuration of one instance listening on ``127.0.0.1:port``.

    ``serve_tls``: accept TLS only, with a client certificate from ``tls.ca``; ``upstream_tls``: proxy over TLS
    with ``tls``'s client certificate, checking the upstream's certificate against ``tls.ca``.
    """
    prefix.mkdir(parents=True)
    (prefix / "tmp").mkdir()
    for f in (tls.ca, tls.server_cert, tls.server_key, tls.client_cert, tls.client_key):
        shutil.copy(f, prefix / f.name)
    server_tls = f"""
        ssl_certificate {prefix / tls.server_cert.name};
        ssl_certificate_key {prefix / tls.server_key.name};
        ssl_client_certificate {prefix / tls.ca.name};
        ssl_verify_client on;
        ssl_protocols TLSv1.3;""" if serve_tls else ""
    proxy_tls = f"""
            proxy_ssl_certificate {prefix / tls.client_cert.name};
            proxy_ssl_certificate_key {prefix / tls.client_key.name};
            proxy_ssl_trusted_certificate {prefix / tls.ca.name};
            proxy_ssl_verify on;
            proxy_ssl_name {SERVER_NAME};
            proxy_ssl_protocols TLSv1.3;
            proxy_ssl_session_reuse on;""" if upstream_tls else ""
    error_log = prefix / "error.log"
    conf = prefix / "nginx.conf"
    conf.write_text(f"""# {name}: written by bench/nginx.py
daemon off;
worker_processes 1;
pid {prefix / "nginx.pid"};
error_log {error_log} warn;
events {{
    worker_connections 4096;
}}
http {{
    access_log off;
    client_body_temp_path {prefix / "tmp" / "body"};
    proxy_temp_path {prefix / "tmp" / "proxy"};
    fastcgi_temp_path {prefix / "tmp" / "fastcgi"};
    uwsgi_temp_path {prefix / "tmp" / "uwsgi"};
    scgi_temp_path {prefix / "tmp" / "scgi"};
    keepalive_requests 1000000;
    keepalive_timeout 75s;
    upstream next_hop {{
        server 127.0.0.1:{upstream_port};
        keepalive 512;
        keepalive_requests 1000000;
    }}
    server {{
        listen 127.0.0.1:{port}{" ssl" if serve_tls else ""} backlog=1024;{server_tls}
        location / {{
            proxy_pass {"https" if upstream_tls else "http"}://next_hop;
            proxy_http_version 1.1;
            proxy_set_header Connection "";{proxy_tls}
        }}
    }}
}}
""")
    user = None
    if os.geteuid() == 0:
        user = UNPRIVILEGED[0]
        uid, gid = pwd.getpwnam(UNPRIVILEGED[0]).pw_uid, grp.getgrnam(UNPRIVILEGED[1]).gr_gid
        for path in (prefix, *prefix.rglob("*")):
            os.chown(path, uid, gid)
    return Instance(name=name, prefix=prefix, port=port, error_log=error_log, user=user,
                    command=[binary, "-p", str(prefix), "-c", str(conf), "-e", str(error_log)])


def popen_options(instance: Instance) -> dict[str, Any]:
    """The ``subprocess.Popen`` keywords that run the instance as its user."""
    if instance.user is None:
        return {}
    return {"user": instance.user, "group": UNPRIVILEGED[1], "extra_groups": []}


def check_config(instance: Instance) -> str | None:
    """``nginx -t`` on the instance's configuration: None when it is good, else nginx's complaint."""
    out = subprocess.run([*instance.command, "-t", "-q"], capture_output=True, text=True, timeout=30, check=False,
                         **popen_options(instance))
    return None if out.returncode == 0 else (out.stderr or out.stdout).strip()
