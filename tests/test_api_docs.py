"""The API document is complete and current, and the docs page at /docs renders it in a real browser
(Chromium, headless) on the entry point and on registry, which serves both in a cluster."""

from __future__ import annotations

import asyncio
import gzip
import json
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from openapi_spec_validator import validate

from services import api_document
from services.registry.app import API_DOCUMENT
from shared.api_docs import CONTENT_SECURITY_POLICY, swagger_ui_version
from tests.stack import Stack

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
# Path parameters that are UUIDs (shared.http.uuid_param); the rest name things by text.
UUID_PARAMS = {"id", "commandId", "deliveryId"}
NO_BODY = {"204", "304", "416"}


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, op)
        for path, methods in document["paths"].items()
        for method, op in methods.items()
    ]


def test_registry_serves_the_generated_copy_of_the_whole_document() -> None:
    assert API_DOCUMENT.read_bytes() == api_document.rendered(), (
        "services/registry/api_document.json is stale; regenerate it with "
        "python -m services openapi > services/registry/api_document.json"
    )


def test_the_document_is_valid_and_complete() -> None:
    document = api_document.whole_document()
    validate(document)  # the OpenAPI 3.1 schema, and $refs that resolve
    assert document["servers"] == [{"url": "/", "description": "the host that serves this document"}]
    assert document["info"]["license"]["identifier"] == "Apache-2.0"
    assert "Apache License" in (ROOT / "LICENSE").read_text()
    for method, path, op in operations(document):
        label = f"{method} {path}"
        assert op.get("description", "").strip(), f"{label} has no description"
        for param in op.get("parameters", []):
            if param["in"] == "path":
                assert param["schema"]["type"] == "string", label
                assert (param["schema"].get("format") == "uuid") is (param["name"] in UUID_PARAMS), (
                    label,
                    param,
                )
        for status, response in op["responses"].items():
            if status in NO_BODY:
                assert "content" not in response, (label, status)
            else:
                assert response.get("content"), f"{label} {status} has no content type"
    responses = {(method, path): op["responses"] for method, path, op in operations(document)}
    assert list(responses["GET", "/v1/heartbeats/stream"]["200"]["content"]) == ["text/event-stream"]
    screenshot = responses["GET", "/v1/screens/{id}/commands/{commandId}/screenshot"]["200"]["content"]
    assert list(screenshot) == ["image/png", "image/jpeg"]
    assert list(responses["GET", "/v1/device/content/{name}"]["206"]["content"]) == ["*/*"]
    upload = document["paths"]["/v1/device/commands/{commandId}/screenshot"]["put"]["requestBody"]
    assert list(upload["content"]) == ["image/png", "image/jpeg"]


def test_registry_does_not_load_the_other_services() -> None:
    """Registry serves the whole document from its file: importing the other services' routes
    would register their metrics (provisioning_alerts, gateway_*) in registry's process."""
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, services.registry.app; print(sorted(sys.modules))"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    ).stdout.split()
    others = [m for m in loaded if re.match(r"'services\.(provisioning|device_gateway|heartbeat)\b", m)]
    assert not others


async def test_registry_and_the_entry_point_serve_the_whole_document_and_the_page(stack: Stack) -> None:
    async with aiohttp.ClientSession() as http:
        for base in (stack.base_url, stack.url("registry")):
            async with http.get(f"{base}/openapi.json") as response:
                assert response.status == 200
                assert await response.json() == api_document.whole_document()
            async with http.get(f"{base}/docs") as response:
                assert response.status == 200 and response.content_type == "text/html"
                assert response.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
                assert response.headers["Cache-Control"] == "no-cache"
            bundle = f"{base}/docs/swagger-ui-bundle.js"
            async with http.get(
                bundle, headers={"Accept-Encoding": "gzip"}, auto_decompress=False
            ) as response:
                assert response.status == 200 and response.content_type == "text/javascript"
                assert response.headers["Content-Encoding"] == "gzip"
                assert response.headers["Cache-Control"] == "public, max-age=86400"
                assert b"SwaggerUIBundle" in gzip.decompress(await response.read())
                etag = response.headers["ETag"]
            async with http.get(bundle, headers={"If-None-Match": etag}) as response:
                assert (response.status, await response.read()) == (304, b"")
            async with http.get(f"{base}/docs/initializer.js") as response:
                assert '"/openapi.json"' in await response.text()
            async with http.get(f"{base}/docs/swagger-ui.js") as response:
                assert response.status == 404  # only the files the page loads
    # Each service still serves its own part.
    async with aiohttp.ClientSession(stack.url("heartbeat")) as http, http.get("/openapi.json") as response:
        assert set((await response.json())["paths"]) == {
            "/v1/fleet/status",
            "/v1/screens/{id}/presence",
            "/v1/screens/{id}/heartbeats",
            "/v1/heartbeats/stream",
        }


@dataclass
class Rendered:
    dom: str
    console: list[str]  # the page's console messages: a CSP violation would be one
    requested: list[str]  # every URL the page asked for (not the browser's own traffic)


async def render(url: str, profile: Path) -> Rendered:
    """``url`` rendered by headless Chromium: its DOM once Swagger UI has drawn the document (10 s
    of the page's virtual time; scripts run as they would)."""
    net_log = profile / "net-log.json"
    process = await asyncio.create_subprocess_exec(
        chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile / 'profile'}",
        "--enable-logging=stderr",
        "--log-level=0",
        f"--log-net-log={net_log}",
        "--virtual-time-budget=10000",
        "--dump-dom",
        url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=90)
    assert process.returncode == 0, stderr.decode(errors="replace")[-3000:]
    console = [line for line in stderr.decode(errors="replace").splitlines() if ":CONSOLE" in line]
    return Rendered(stdout.decode(), console, requests_of_the_page(net_log, url))


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which(CHROMIUM)
    if found is None:
        raise AssertionError(f"{CHROMIUM} is missing: `make test-tools` installs it (Debian's chromium)")
    return found


def requests_of_the_page(net_log: Path, url: str) -> list[str]:
    """The URLs Chromium's network log shows the page at ``url`` asked for: they are isolated under
    its site, while the browser's own traffic (its update and sign-in checks) is not."""
    log = json.loads(net_log.read_text())
    start = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    site = re.match(r"https?://[^:/]+", url)
    assert site
    return [
        event["params"]["url"]
        for event in log["events"]
        if event["type"] == start
        and event.get("params", {}).get("network_isolation_key", "").startswith(site.group(0) + " ")
    ]


async def test_the_docs_page_lists_every_operation_in_a_browser(stack: Stack, tmp_path: Path) -> None:
    status, document, _ = await stack.call("GET", "/openapi.json")
    assert status == 200
    expected = len(operations(document))
    seen = {}
    for name, base in (("entrypoint", stack.base_url), ("registry", stack.url("registry"))):
        page = await render(f"{base}/docs", tmp_path / name)
        blocks = re.findall(r'<div class="opblock opblock-(?:get|post|put|patch|delete)[ "]', page.dom)
        summaries = re.findall(r'class="opblock-summary-description">([^<]*)<', page.dom)
        seen[name] = (len(blocks), len(summaries), len(page.requested))
        assert len(blocks) == expected, (name, len(blocks), expected)
        assert "Create a tenant and its first API client" in summaries
        assert "Report that the TV is alive" in summaries
        assert "Signage API" in page.dom and "OAS 3.1" in page.dom
        assert not page.console, page.console  # nothing refused by the CSP, no script error
        # Whatever the page loaded came from where it was served.
        assert (
            f"{base}/openapi.json" in page.requested and f"{base}/docs/swagger-ui-bundle.js" in page.requested
        )
        assert all(u.startswith(base + "/") for u in page.requested), page.requested
        loaded = re.findall(r'<(?:script|img|link)\b[^>]*\b(?:src|href)="([^"]*)"', page.dom)
        assert loaded and all(u.startswith("/") and not u.startswith("//") for u in loaded), loaded
    print(f"Swagger UI {swagger_ui_version()}: {expected} operations in /openapi.json; rendered", seen)
