"""Routes described once: each service lists its operations; the aiohttp routes and the OpenAPI
document are both built from that list, so the document cannot drift from what is served."""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec
from aiohttp import web

from shared.auth import OPERATION_SCOPES, SCOPES
from shared.errors import ErrorBody
from shared.http import add_routes, finish_routes

Auth = Literal["none", "operator", "admin", "device", "client"]

_SECURITY: dict[str, list[dict[str, list[str]]]] = {
    "none": [],
    "operator": [{"operatorToken": []}],
    "device": [{"deviceKey": []}],
    "client": [{"clientBasic": []}, {}],
}
_ERROR_TEXT = {
    400: "invalid input",
    401: "missing, invalid or revoked credential",
    403: "not allowed",
    404: "no such resource in your tenant",
    409: "the state forbids it",
    410: "the code expired or was superseded",
    413: "body too large",
    415: "body is not JSON",
    429: "too many attempts; see Retry-After",
    503: "not ready yet; retry after Retry-After",
}


# Every path parameter the services use, typed once: a new one must be added here (document()
# refuses an untyped one). Ids are UUIDs (a malformed one is a 404, shared/http.uuid_param); the
# others name things by text.
_UUID = {"type": "string", "format": "uuid"}
PATH_PARAMS: dict[str, dict[str, Any]] = {
    "id": {**_UUID, "description": "the resource's id"},
    "commandId": {**_UUID, "description": "the command's id"},
    "deliveryId": {**_UUID, "description": "the delivery's id"},
    "clientId": {"type": "string", "description": "the API client's client_id"},
    "code": {"type": "string", "description": "the pairing code (8 characters A-Z, 0-9)"},
    "userCode": {"type": "string", "description": "the user code the TV shows (RFC 8628)"},
    "serial": {"type": "string", "description": "the device's serial number"},
    "name": {"type": "string", "description": "the file's name"},
}

# The whole API is served from the root of one host (the entry point, the cluster's Gateway); each
# service answers its own part at the root of its port.
SERVERS = [{"url": "/", "description": "the host that serves this document"}]
LICENSE = {"name": "Apache License 2.0", "identifier": "Apache-2.0"}  # the repository's LICENSE

# A body that is not JSON, by its media types (its schema: bytes).
Media = str | tuple[str, ...]
_BINARY = {"type": "string", "format": "binary"}


@dataclass(frozen=True)
class Param:
    name: str
    schema: dict[str, Any]
    description: str = ""
    where: Literal["query", "header"] = "query"


# A list's page: its size and where the previous page ended (shared/pagination.py).
LIMIT = Param("limit", {"type": "integer", "minimum": 1, "maximum": 200, "default": 50})
PAGE = (LIMIT, Param("cursor", {"type": "string"}, "nextCursor of the previous page"))


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    summary: str
    auth: Auth
    body: Any = None  # a Struct type, or a JSON schema dict for non-JSON bodies
    body_content_type: Media = "application/json"
    # status -> a Struct type (JSON), the media type(s) of a body that is not JSON, or None (no body)
    responses: dict[int, Any] = field(default_factory=dict)
    errors: tuple[int, ...] = ()
    params: tuple[Param, ...] = ()
    # Hot paths (the TVs' polls and reports): successes are counted in the metrics, not logged.
    quiet: bool = False
    # The section of the API it belongs to (OpenAPI tag), as in the README.
    tag: str = ""
    # What an access token must carry to call it (auth "admin" only; ``admin`` implies them all).
    scope: str = ""
    # The dependencies it cannot answer without: while one is known to be away, 503 at once.
    needs: tuple[Literal["nats"], ...] = ()
    # What a caller should know beyond the summary; the handler's docstring when not given.
    description: str = ""

    def __post_init__(self) -> None:
        if (self.auth == "admin") != (self.scope in SCOPES):
            raise ValueError(f"{self.method} {self.path}: an admin operation, and only one, names a scope")


def document(title: str, operations: Iterable[Operation], *, version: str = "1.0.0") -> dict[str, Any]:
    operations = list(operations)
    types: set[type] = {ErrorBody}
    for op in operations:
        if isinstance(op.body, type):
            types.add(op.body)
        types.update(t for t in op.responses.values() if isinstance(t, type))
    (_, components) = msgspec.json.schema_components(
        sorted(types, key=lambda t: t.__name__), ref_template="#/components/schemas/{name}"
    )
    paths: dict[str, dict[str, Any]] = {}
    for op in operations:
        paths.setdefault(op.path, {})[op.method.lower()] = _operation(op)
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version, "license": LICENSE},
        "servers": SERVERS,
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "operatorToken": {"type": "http", "scheme": "bearer", "description": "OPERATOR_TOKEN"},
                "accessToken": {
                    "type": "oauth2",
                    "description": "a JWT from the client credentials grant; admin implies every scope",
                    "flows": {"clientCredentials": {"tokenUrl": "/oauth/token", "scopes": SCOPES}},
                },
                "deviceKey": {"type": "http", "scheme": "bearer", "description": "dak_ device key"},
                "clientBasic": {"type": "http", "scheme": "basic"},
            },
        },
    }


def _ref(type_: Any) -> dict[str, Any]:
    if isinstance(type_, dict):
        return type_
    return {"$ref": f"#/components/schemas/{type_.__name__}"}


def _content(type_: Any) -> dict[str, Any]:
    """A body's ``content``: a Struct's schema as JSON, or the media types of bytes."""
    if isinstance(type_, str | tuple):
        return {media: {"schema": _BINARY} for media in ((type_,) if isinstance(type_, str) else type_)}
    return {"application/json": {"schema": _ref(type_)}}


def _path_param(op: Operation, name: str) -> dict[str, Any]:
    if name not in PATH_PARAMS:
        raise ValueError(f"{op.method} {op.path}: the path parameter {name} has no type in PATH_PARAMS")
    schema = dict(PATH_PARAMS[name])
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": schema.pop("description"),
        "schema": schema,
    }


def description_of(op: Operation) -> str:
    """The operation's description, or its handler's docstring as one paragraph per blank line."""
    if op.description:
        return op.description
    text = inspect.getdoc(op.handler) or ""
    return "\n\n".join(" ".join(paragraph.split()) for paragraph in text.split("\n\n") if paragraph.strip())


def _operation(op: Operation) -> dict[str, Any]:
    parameters = [_path_param(op, name) for name in re.findall(r"{(\w+)}", op.path)] + [
        {"name": p.name, "in": p.where, "required": False, "schema": p.schema, "description": p.description}
        for p in op.params
    ]
    responses: dict[str, Any] = {}
    for status, type_ in op.responses.items():
        response: dict[str, Any] = {"description": "OK" if status < 300 else "see body"}
        if type_ is not None:
            response["content"] = _content(type_)
        responses[str(status)] = response
    # Every admin operation may answer 403: a token without the operation's scope.
    for status in sorted({*op.errors, 403} if op.auth == "admin" else op.errors):
        responses[str(status)] = {
            "description": _ERROR_TEXT.get(status, "error"),
            "content": {"application/json": {"schema": _ref(ErrorBody)}},
        }
    # Handlers of different services share names (get_config): the service keeps ids unique.
    module = op.handler.__module__.split(".")
    service = module[1] if module[0] == "services" and len(module) > 1 else module[0]
    result: dict[str, Any] = {
        "operationId": f"{service}.{op.handler.__name__}",
        "summary": op.summary,
        "description": description_of(op),
        "security": [{"accessToken": [op.scope]}] if op.auth == "admin" else _SECURITY[op.auth],
        "responses": responses,
    }
    if op.tag:
        result["tags"] = [op.tag]
    if parameters:
        result["parameters"] = parameters
    if op.body is not None:
        media = (op.body_content_type,) if isinstance(op.body_content_type, str) else op.body_content_type
        result["requestBody"] = {"required": True, "content": {m: {"schema": _ref(op.body)} for m in media}}
    return result


def add_operations(
    app: web.Application, title: str, operations: list[Operation], *, served_document: bytes | None = None
) -> None:
    """Serve ``operations`` and, at ``GET /openapi.json``, their OpenAPI document (or
    ``served_document``, one that includes them: the whole API's); the app's last routes."""
    body = served_document or msgspec.json.encode(document(title, operations))

    async def openapi_document(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    # principal_of enforces the scope each operation declares, by the route the request matched.
    app[OPERATION_SCOPES] = {(op.method, op.path): op.scope for op in operations if op.auth == "admin"}
    add_routes(
        app,
        [(op.method, op.path, op.handler, op.quiet) for op in operations],
        needs={(op.method, op.path): op.needs for op in operations if op.needs},
    )
    add_routes(app, [("GET", "/openapi.json", openapi_document, False)])
    finish_routes(app)
