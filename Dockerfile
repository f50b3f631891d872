# One image for every service; the command chooses which: `python -m services NAME`
# (registry, provisioning, device-gateway, heartbeat, setup — see services/__main__.py).
#   docker build -t signage-backend \
#     --build-arg VERSION="$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)" \
#     --build-arg REVISION="$(git rev-parse HEAD)" --build-arg CREATED="$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
#     --build-arg SOURCE="$(git remote get-url origin)" .
#   docker run --rm signage-backend signing-key
# It holds what runs in production and nothing else: the locked runtime dependencies and the wheel
# of services/ and shared/ (no devstack/, bench/ or tests/).

# ---- base: Debian 12 with Python 3.11, by digest -----------------------------------------------
# The digest of the multi-platform index (amd64 and arm64 alike), so every build starts from the same
# bytes; the tag says what it is. Refresh it for Debian's and Python's fixes (deploy/README.md):
#   docker buildx imagetools inspect python:3.11-slim-bookworm --format '{{json .Manifest.Digest}}'
FROM python:3.11-slim-bookworm@sha256:0bee7276f83efd4a1ee05bbbf4281d95ed28e079220a9457f25a93e3f1e3c31b AS base

# ---- build: a virtualenv with the locked dependencies, then the project's wheel -----------------
FROM base AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/venv && python -m venv /opt/build
COPY requirements/runtime.txt requirements/build.txt requirements/
# Exactly the files the locks name: pip refuses one whose hash differs. The locks are complete, so
# nothing is resolved again (--no-deps: what requirements/overrides.txt leaves out stays out).
# These layers are rebuilt only when the locks change, not on every change of the code.
RUN /opt/venv/bin/pip install --no-deps --require-hashes --requirement requirements/runtime.txt \
    && /opt/build/bin/pip install --no-deps --require-hashes --requirement requirements/build.txt
COPY pyproject.toml LICENSE ./
COPY shared/ shared/
COPY services/ services/
# The wheel is built by the locked setuptools in a virtualenv of its own, which stays behind.
RUN /opt/build/bin/pip wheel --no-deps --no-build-isolation --wheel-dir /src/dist . \
    && /opt/venv/bin/pip install --no-deps /src/dist/*.whl \
    && /opt/venv/bin/python -m compileall -q /opt/venv

# ---- run: the virtualenv on the slim base, as an unprivileged user -------------------------------
FROM base
ARG VERSION
ARG REVISION
ARG CREATED
ARG SOURCE
LABEL org.opencontainers.image.title="signage-backend" \
      org.opencontainers.image.description="Binds digital-signage screens to a multi-tenant cloud and serves them afterwards" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.base.name="docker.io/library/python:3.11-slim-bookworm"
RUN groupadd --system --gid 10001 signage \
    && useradd --system --uid 10001 --gid signage --no-create-home --shell /usr/sbin/nologin signage
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    LOG_FORMAT=json
# Nothing is written outside /tmp (prometheus' multiprocess files with WORKERS > 1), so the root
# filesystem can be mounted read-only.
WORKDIR /tmp
USER 10001:10001
EXPOSE 8081 8082 8083 8084
ENTRYPOINT ["python", "-m", "services"]
