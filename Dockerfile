# The gateway image: the one `gateway` console script that runs every part (security server, central server,
# development PKI, adapters); the command chooses the part (deploy/compose/compose.yaml, deploy/kubernetes/).
#
# Two stages. The build stage has the compilers that a dependency without a wheel for this platform would need
# and installs the project into a virtual environment; the final stage gets that environment and nothing else
# from it, runs as an unprivileged user, and checks its health over HTTP.
# tests/unit/test_deploy_files.py checks these rules with dockerfile-parse.

FROM python:3.11.10-slim-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/gateway/venv
WORKDIR /src
COPY pyproject.toml README.md ./
COPY gateway ./gateway
COPY adapters ./adapters
# uvloop with it (extra "fast"): the event loop `gateway server serve` uses when installed
RUN /opt/gateway/venv/bin/pip install '.[fast]'

FROM python:3.11.10-slim-bookworm
RUN groupadd --system --gid 10001 gateway \
 && useradd --system --uid 10001 --gid gateway --home-dir /var/lib/gateway --shell /usr/sbin/nologin gateway \
 && install -d -o gateway -g gateway -m 0700 /var/lib/gateway
COPY --from=build /opt/gateway/venv /opt/gateway/venv
# GATEWAY_HEALTH_URL: what HEALTHCHECK asks; a security server's liveness on its ops port ([server] ops_port);
# set it per part (compose.yaml does for the central server, PKI and adapters)
ENV PATH=/opt/gateway/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    GATEWAY_HEALTH_URL=http://127.0.0.1:5588/healthz
USER 10001:10001
WORKDIR /var/lib/gateway
# client-facing HTTP and HTTPS, server-to-server (mTLS), admin API, ops (metrics, /healthz, /readyz)
EXPOSE 8080 8443 5500 4000 5588
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ['GATEWAY_HEALTH_URL'], timeout=4)"]
ENTRYPOINT ["gateway"]
CMD ["--help"]
