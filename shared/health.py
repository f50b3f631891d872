"""What probes and Prometheus ask a service: is it alive, is it ready, its metrics.

Ready means this replica can answer its own routes (the gateway: its projections are loaded);
the shared dependencies' health is not part of it (see ``shared.dependencies``) but is shown by
``GET /readyz?verbose``, for people and alerts, with the same status code."""

from __future__ import annotations

import os

import prometheus_client
from aiohttp import web
from prometheus_client import multiprocess

from shared.app_keys import READINESS
from shared.dependencies import DEPENDENCIES
from shared.http import json_response
from shared.request_metrics import flush as flush_request_metrics


async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    checks = {}
    for name, check in request.app[READINESS].items():
        try:
            checks[name] = await check()
        except Exception:  # noqa: BLE001 - a failing check means "not ready", never a 500
            checks[name] = False
    ready = all(checks.values())
    body: dict[str, object] = {"status": "ready" if ready else "not_ready", "checks": checks}
    if request.query.get("verbose", "0") not in ("0", "false"):  # ?verbose, ?verbose=1
        body["dependencies"] = request.app[DEPENDENCIES].states
    return json_response(body, status=200 if ready else 503)


async def metrics(request: web.Request) -> web.Response:
    flush_request_metrics()  # this worker's last second of requests, tallied (shared/request_metrics.py)
    registry = prometheus_client.REGISTRY
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:  # one of several workers: answer for all of them
        registry = prometheus_client.CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    return web.Response(
        body=prometheus_client.generate_latest(registry),
        headers={"Content-Type": prometheus_client.CONTENT_TYPE_LATEST},
    )
