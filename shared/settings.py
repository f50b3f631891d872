"""Every setting of the services, declared once: its variable, type, default, bounds and meaning.

A field is the environment variable of its name in capitals (``workers`` is ``WORKERS``); its
``Meta`` holds the bounds and the one line the settings table of the docs shows
(``python -m services settings`` prints that table). ``shared.environment`` reads the variables
against these fields. What registry tells operators (offline alerts, webhooks) is declared in
``shared.notification_settings``, which ``Settings`` extends. A default may name other settings in
braces (``{registry_port}``): it follows them unless its own variable is set. It is filled in when
the Settings are made, so a copy made with ``msgspec.structs.replace`` that changes a port keeps
the old URL: give both.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from shared.environment import CA_BUNDLE, NatsServers, Networks, from_env, resolve_templates
from shared.notification_settings import NotificationSettings

Port = Annotated[int, Meta(ge=1, le=65535)]

_DAY = 24 * 3600


class Settings(NotificationSettings, frozen=True, kw_only=True):
    nats_url: Annotated[
        NatsServers,
        Meta(
            description="NATS servers, comma-separated (`nats://a:4222,nats://b:4222`); the client takes"
            " any that answers and learns the rest of a cluster from it. `make run` and the tests start"
            " their own"
        ),
    ]
    nats_user: Annotated[
        str,
        Meta(
            description="the service's NATS user, whose rights are its own (docs/operations.md);"
            " empty: the service's name"
        ),
    ] = ""
    nats_password: Annotated[
        str, Meta(description="that user's password; empty: connect without credentials")
    ] = ""
    nats_tls_ca_file: Annotated[
        str,
        Meta(
            description="CA bundle that signed the NATS servers' certificates (`tls://` URLs);"
            " empty: the system's"
        ),
        CA_BUNDLE,
    ] = ""
    database_url: Annotated[
        str, Meta(description="PostgreSQL URL; every service but the device gateway, which has no tables")
    ] = ""
    operator_token: Annotated[
        str,
        Meta(
            description="bearer token that may create tenants; empty: nobody may (`make run` generates one)"
        ),
    ] = ""
    token_signing_key: Annotated[
        str,
        Meta(description="registry's Ed25519 key signing access tokens, url-safe base64 of the 32-byte seed"),
    ] = ""
    token_verify_keys: Annotated[
        tuple[str, ...],
        Meta(
            description="public keys whose tokens are accepted besides the signing key's own; keep the old"
            " one here while a new key signs, and keys rotate without downtime"
        ),
    ] = ()
    token_ttl_seconds: Annotated[int, Meta(ge=1, le=31 * _DAY, description="access token lifetime")] = 3600
    token_issuer: Annotated[str, Meta(min_length=1, description="`iss` of the access tokens")] = "signage"
    code_ttl_seconds: Annotated[int, Meta(ge=1, le=31 * _DAY, description="provisioning code lifetime")] = (
        15 * 60
    )
    client_secret_ttl_seconds: Annotated[
        int,
        Meta(
            ge=0,
            le=10 * 365 * 86400,
            description="secrets of clients registered at /oauth/register expire after this; 0: never",
        ),
    ] = 0
    register_failures_per_window: Annotated[
        int,
        Meta(
            ge=1,
            description="failed attempts with a proof (pairing code, serial, secret...) per flow, client"
            " address (IPv6: its /64) or tenant, and window before 429",
        ),
    ] = 10
    # A botnet guessing codes from many addresses is slowed down, not let to close onboarding for
    # all: above this, each address gets the smaller budget below, and its first attempt is still
    # looked at, so a TV with a valid code gets in (docs/architecture.md).
    register_failures_global_per_window: Annotated[
        int,
        Meta(
            ge=1,
            description="failures of a guessable flow from all addresses together after which each"
            " address gets REGISTER_FAILURES_UNDER_PRESSURE",
        ),
    ] = 1000
    register_failures_under_pressure: Annotated[
        int, Meta(ge=1, description="the per-address budget while a flow is over the global count")
    ] = 2
    register_failure_window_seconds: Annotated[
        int, Meta(ge=1, le=_DAY, description="the window of the budgets above")
    ] = 60
    device_authorizations_per_window: Annotated[
        int,
        Meta(
            ge=1,
            description="device-first pairing requests (/oauth/device_authorization) per client address"
            " and window before 429",
        ),
    ] = 30
    prune_expired_after_seconds: Annotated[
        int,
        Meta(
            ge=0,
            le=366 * _DAY,
            description="device authorizations, pairing codes and provisioning tokens that bound no device"
            " are deleted this long after they expired (till then they answer 410, then 404)",
        ),
    ] = _DAY
    # What the retention buys: a TV that comes back within it hears "revoked" (401 device_revoked)
    # rather than "unknown" (401 unauthorized); either shows its pairing screen again.
    revoked_key_retention_hours: Annotated[
        float,
        Meta(
            ge=0,
            le=10 * 365 * 24,
            description="a revoked device key answers 401 `device_revoked` this long, then it is forgotten"
            " (401 `unauthorized`): its row and its entry in every gateway's memory go",
        ),
    ] = 30 * 24
    trusted_proxies: Annotated[
        Networks, Meta(description="networks whose X-Forwarded-For is believed (`make run`: loopback)")
    ] = ()
    max_body_bytes: Annotated[int, Meta(ge=1024, le=2**30, description="larger request bodies get 413")] = (
        2**20
    )
    # Files are held in memory while stored; the gateway serves them a chunk at a time.
    max_file_bytes: Annotated[
        int, Meta(ge=1, le=2**30, description="largest file for devices (PUT /v1/content/{name})")
    ] = 64 * 2**20
    # A screenshot is held in memory while stored, like a file.
    max_screenshot_bytes: Annotated[
        int,
        Meta(
            ge=1,
            le=2**30,
            description="largest screenshot a TV uploads (PUT /v1/device/commands/{id}/screenshot)",
        ),
    ] = 5 * 2**20
    registry_url: Annotated[
        str,
        Meta(description="registry's base URL, where provisioning asks about a screen it has not seen yet"),
    ] = "http://127.0.0.1:{registry_port}"
    provisioning_url: Annotated[
        str,
        Meta(description="provisioning's base URL, where registry's token endpoint passes device grants on"),
    ] = "http://127.0.0.1:{provisioning_port}"
    public_url: Annotated[
        str,
        Meta(
            min_length=1,
            description="where the API is reached from outside (OAuth metadata: issuer, endpoints)",
        ),
    ] = "http://localhost:{entrypoint_port}"
    device_client_id: Annotated[
        str, Meta(min_length=1, description="the TV app's public client id (device-first pairing, RFC 8628)")
    ] = "signage-player"
    device_verification_uri: Annotated[
        str,
        Meta(
            description="your console's page where a person enters the TV's code; empty: $PUBLIC_URL/activate"
        ),
    ] = ""
    device_code_ttl_seconds: Annotated[
        int, Meta(ge=1, le=_DAY, description="device-first pairing: how long a device code lives")
    ] = 600
    device_poll_interval_seconds: Annotated[
        int, Meta(ge=0, le=300, description="device-first pairing: how often the TV may poll")
    ] = 5
    nats_replicas: Annotated[
        int,
        Meta(
            ge=1,
            le=5,
            description="replicas of streams, KV buckets and the files' object store (3 in production)",
        ),
    ] = 1
    host: Annotated[
        str, Meta(min_length=1, description="address the services listen on (`make run`: 127.0.0.1)")
    ] = "0.0.0.0"
    gateway_max_lag_ms: Annotated[
        int,
        Meta(
            ge=1,
            le=60_000,
            description="the gateway answers device requests 429 while its event loop lags more",
        ),
    ] = 250
    gateway_max_pending_reports: Annotated[
        int,
        Meta(
            ge=1,
            le=1_000_000,
            description="per gateway worker: reports waiting for JetStream's ack before new ones get 429",
        ),
    ] = 2000
    gateway_max_downloads_per_device: Annotated[
        int,
        Meta(
            ge=1,
            le=100,
            description="per gateway worker: a device's file downloads at once; one more gets 429",
        ),
    ] = 2
    # Every proxy and load balancer between the TVs and the gateway must keep an idle request open
    # longer than this (docs/tv-app.md names the usual defaults).
    device_wait_max_seconds: Annotated[
        int,
        Meta(
            ge=1,
            le=300,
            description="the longest a TV's poll with `Prefer: wait=N` is held before its 304; a larger N"
            " is cut to this",
        ),
    ] = 60
    gateway_max_waiting: Annotated[
        int,
        Meta(
            ge=0,
            le=1_000_000,
            description="per gateway worker: polls held at once; past it a poll is answered at once,"
            " without Preference-Applied; 0: none is held",
        ),
    ] = 20_000
    offline_after_intervals: Annotated[
        float,
        Meta(
            gt=0,
            le=1000,
            description="a screen is offline once this many heartbeat intervals passed without one",
        ),
    ] = 3
    presence_check_seconds: Annotated[
        float,
        Meta(gt=0, le=3600, description="how often the heartbeat service looks for screens gone offline"),
    ] = 5
    presence_write_seconds: Annotated[
        float,
        Meta(
            ge=0,
            le=86_400,
            description="an online screen's heartbeat is written (presence and history) at most this often;"
            " transitions at once; 0: every heartbeat",
        ),
    ] = 1500
    heartbeat_retention_hours: Annotated[
        float, Meta(gt=0, le=10 * 365 * 24, description="how long the heartbeat history keeps what it stores")
    ] = 72
    heartbeat_stream_hours: Annotated[
        float,
        Meta(
            ge=1,
            le=30 * 24,
            description="how long the HEARTBEATS stream keeps heartbeats and presence changes (the setup"
            " step applies it): the outage its consumers ride out, how far back an event stream resumes",
        ),
    ] = 24
    sse_keepalive_seconds: Annotated[
        float,
        Meta(
            gt=0,
            le=3600,
            description="a comment this often keeps proxies from closing an idle heartbeat stream",
        ),
    ] = 15
    sse_buffer: Annotated[
        int,
        Meta(
            ge=1,
            le=1_000_000,
            description="events a heartbeat stream's client may fall behind before it is dropped",
        ),
    ] = 1000
    sse_streams_per_tenant: Annotated[
        int,
        Meta(
            ge=1,
            le=10_000,
            description="per heartbeat service process: a tenant's open heartbeat streams; one more gets 429",
        ),
    ] = 10
    workers: Annotated[
        int,
        Meta(
            ge=1,
            le=64,
            description="processes serving the service's port (SO_REUSEPORT); the gateway wants one per core",
        ),
    ] = 1
    # Each service's port: the `ports` property maps service names onto these.
    entrypoint_port: Annotated[Port, Meta(description="the local entry point's port (`make run`)")] = 8080
    registry_port: Annotated[Port, Meta(description="registry's port")] = 8081
    provisioning_port: Annotated[Port, Meta(description="provisioning's port")] = 8082
    device_gateway_port: Annotated[Port, Meta(description="the device gateway's port")] = 8083
    heartbeat_port: Annotated[Port, Meta(description="the heartbeat service's port")] = 8084
    log_format: Annotated[
        Literal["console", "json", "auto"],
        Meta(description="`json`: one JSON object per line; `auto`: JSON unless on a terminal"),
    ] = "console"
    log_level: Annotated[
        Literal["debug", "info", "warning", "error", "critical"],
        Meta(description="the least severe level logged"),
    ] = "info"

    def __post_init__(self) -> None:
        resolve_templates(self)
        msgspec.structs.force_setattr(self, "public_url", self.public_url.rstrip("/"))

    @property
    def ports(self) -> dict[str, int]:
        """Port by service name (``device-gateway``) and ``entrypoint``."""
        return {
            name.removesuffix("_port").replace("_", "-"): getattr(self, name)
            for name in self.__struct_fields__
            if name.endswith("_port")
        }

    @property
    def verification_uri(self) -> str:
        return self.device_verification_uri or f"{self.public_url}/activate"

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Settings:
        """Every variable checked; :class:`~shared.environment.SettingsError` names a wrong one."""
        return from_env(cls, env)


def port_field(service: str) -> str:
    """The field (so the variable) of ``service``'s port: ``device-gateway`` is ``device_gateway_port``."""
    return service.replace("-", "_") + "_port"


# Every setting's default by field name (Settings itself cannot be made without the servers' addresses).
DEFAULTS = {field.name: field.default for field in msgspec.structs.fields(Settings)}

DEFAULT_PORTS = {
    field.name.removesuffix("_port").replace("_", "-"): field.default
    for field in msgspec.structs.fields(Settings)
    if field.name.endswith("_port")
}
