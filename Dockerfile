# One image for every service; the command chooses which: `python -m services NAME`
# (registry, provisioning, device-gateway, heartbeat, setup — see services/__main__.py).
#   docker build -t signage-backend .
#   docker run --rm signage-backend signing-key

# ---- build: a virtualenv with the pinned dependencies, then the project itself ----------------
FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/venv
COPY pyproject.toml requirements.lock ./
# The runtime dependencies alone, at the versions in requirements.lock; this layer is rebuilt
# only when those change, not on every change of the code.
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > runtime.txt \
    && /opt/venv/bin/pip install --constraint requirements.lock --requirement runtime.txt
COPY shared/ shared/
COPY services/ services/
COPY devstack/ devstack/
COPY bench/ bench/
RUN /opt/venv/bin/pip install --no-deps . \
    && /opt/venv/bin/python -m compileall -q /opt/venv

# ---- run: the virtualenv on a slim base, as an unprivileged user -------------------------------
FROM python:3.11-slim-bookworm
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
