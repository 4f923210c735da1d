# syntax=docker/dockerfile:1
# Pool image: builds the wheel (with the C share-check extension) in a builder stage, runs as a non-root user.
#
#   docker build -t pool .
#   docker run -v /srv/pool/pool.toml:/etc/pool/pool.toml:ro -v pool-data:/var/lib/pool \
#     -p 3333:3333 -p 127.0.0.1:9100:9100 pool
#
# The config must point node.rpc_url at a reachable bitcoind and, to be scraped from outside the container,
# set metrics.host = "0.0.0.0" (127.0.0.1 is only reachable inside it; the HEALTHCHECK uses 127.0.0.1, which
# 0.0.0.0 includes). Publish 9100 on the host's loopback or a private address only, never on a public one.
# The admin API is off unless POOL_ADMIN_TOKEN (or admin.token/token_file) is set; give it its own port
# (admin.port = 9101, admin.host = "0.0.0.0" inside the container) and publish that on loopback only:
#     -e POOL_ADMIN_TOKEN=... -p 127.0.0.1:9101:9101
# Stratum over TLS: stratum.tls_port (e.g. 3334, publish it like 3333) with tls_cert/tls_key mounted read-only;
# `docker kill --signal HUP pool` reloads them after a renewal.

FROM python:3.11-slim AS builder
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY pool ./pool
# The project's own wheel (compiles pool/_sharecheck.c), then wheels of its dependencies.
RUN pip wheel --no-cache-dir --no-deps -w /wheels . \
    && pip wheel --no-cache-dir -w /wheels /wheels/pool-*.whl

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
COPY --from=builder /wheels /tmp/wheels
RUN pip install --no-index --find-links=/tmp/wheels pool \
    && rm -rf /tmp/wheels \
    && useradd --system --uid 10001 --user-group --home-dir /var/lib/pool --shell /usr/sbin/nologin pool \
    && mkdir -p /var/lib/pool /etc/pool \
    && chown pool:pool /var/lib/pool
WORKDIR /var/lib/pool
VOLUME ["/var/lib/pool"]
USER pool
EXPOSE 3333 9100
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:9100/healthz', timeout=4).status == 200 else 1)"]
ENTRYPOINT ["pool"]
CMD ["run", "--config", "/etc/pool/pool.toml"]
