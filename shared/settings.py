"""Typed settings, read once from the environment in each service's ``__main__``."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping

import msgspec

DEFAULT_PORTS = {
    "entrypoint": 8080,
    "registry": 8081,
    "provisioning": 8082,
    "device-gateway": 8083,
    "heartbeat": 8084,
}


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    nats_url: str
    # Every service but the device gateway, which never touches the database.
    database_url: str = ""
    # Admin of the whole installation: may create tenants. Empty means nobody may.
    operator_token: str = ""
    # Ed25519 private key (url-safe base64 of the 32-byte seed) that signs access tokens; registry only.
    token_signing_key: str = ""
    # Public keys (url-safe base64, comma separated) whose tokens every service accepts; keeping the
    # previous key here while a new one signs is how keys rotate without downtime.
    token_verify_keys: tuple[str, ...] = ()
    token_ttl_seconds: int = 3600
    token_issuer: str = "signage"
    code_ttl_seconds: int = 15 * 60
    # Secrets of API clients registered at /oauth/register expire after this long; 0: never.
    client_secret_ttl_seconds: int = 0
    # Failed registrations one client address may make per window before it gets 429.
    register_failures_per_window: int = 10
    # ...and from all addresses together: a botnet guessing codes from many addresses is slowed
    # down too (everyone waits for the window's end; a wrong guess costs the attacker nothing else).
    register_failures_global_per_window: int = 1000
    register_failure_window_seconds: int = 60
    # X-Forwarded-For is believed only when the direct peer is one of these networks.
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    max_body_bytes: int = 1024 * 1024
    # Files for devices (PUT /v1/content/{name}) are held in memory while stored and served.
    max_file_bytes: int = 64 * 1024 * 1024
    # Registry's base URL, for provisioning to look up a screen its event copy has not seen yet.
    registry_url: str = "http://127.0.0.1:8081"
    # Provisioning's base URL, for registry's token endpoint to pass device-code grants on.
    provisioning_url: str = "http://127.0.0.1:8082"
    # Where the API is reached from outside (RFC 8414 metadata: issuer and endpoints).
    public_url: str = "http://localhost:8080"
    # Device-first pairing (RFC 8628): the TV app's public client id; the page where an admin
    # enters the code the TV shows (your console; it calls .../device-authorizations/{userCode}/approve);
    # how long a device code lives and how often the TV may poll.
    device_client_id: str = "signage-player"
    device_verification_uri: str = ""
    device_code_ttl_seconds: int = 600
    device_poll_interval_seconds: int = 5
    nats_replicas: int = 1
    host: str = "0.0.0.0"
    # The gateway sheds device requests (429) while its event loop lags more than this, and
    # heartbeats/events while this many per worker wait for JetStream's ack.
    gateway_max_lag_ms: int = 250
    gateway_max_pending_reports: int = 2000
    # A screen is offline once this many of its heartbeat intervals passed without one; the
    # heartbeat service looks for such screens every presence_check_seconds.
    offline_after_intervals: float = 3
    presence_check_seconds: float = 5
    # How long the heartbeat history (GET /v1/screens/{id}/heartbeats) keeps each heartbeat.
    heartbeat_retention_hours: float = 7 * 24
    # GET /v1/heartbeats/stream: a comment this often keeps proxies from closing an idle stream;
    # a client with this many events waiting for it is dropped (it resumes with Last-Event-ID).
    sse_keepalive_seconds: float = 15
    sse_buffer: int = 1000
    # Processes serving the service's port (SO_REUSEPORT); the gateway wants one per core.
    workers: int = 1
    ports: dict[str, int] = msgspec.field(default_factory=lambda: dict(DEFAULT_PORTS))
    log_format: str = "console"
    log_level: str = "info"

    @property
    def verification_uri(self) -> str:
        return self.device_verification_uri or f"{self.public_url}/activate"

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Settings:
        if not env.get("NATS_URL"):
            raise SystemExit("missing setting: NATS_URL")
        ports = {
            service: int(env.get(f"{service.upper().replace('-', '_')}_PORT", default))
            for service, default in DEFAULT_PORTS.items()
        }
        return cls(
            database_url=env.get("DATABASE_URL", ""),
            nats_url=env["NATS_URL"],
            operator_token=env.get("OPERATOR_TOKEN", ""),
            token_signing_key=env.get("TOKEN_SIGNING_KEY", ""),
            token_verify_keys=_split(env.get("TOKEN_VERIFY_KEYS", "")),
            token_ttl_seconds=int(env.get("TOKEN_TTL_SECONDS", 3600)),
            token_issuer=env.get("TOKEN_ISSUER", "signage"),
            code_ttl_seconds=int(env.get("CODE_TTL_SECONDS", 15 * 60)),
            client_secret_ttl_seconds=int(env.get("CLIENT_SECRET_TTL_SECONDS", 0)),
            register_failures_per_window=int(env.get("REGISTER_FAILURES_PER_WINDOW", 10)),
            register_failures_global_per_window=int(env.get("REGISTER_FAILURES_GLOBAL_PER_WINDOW", 1000)),
            register_failure_window_seconds=int(env.get("REGISTER_FAILURE_WINDOW_SECONDS", 60)),
            trusted_proxies=tuple(
                ipaddress.ip_network(net, strict=False) for net in _split(env.get("TRUSTED_PROXIES", ""))
            ),
            max_body_bytes=int(env.get("MAX_BODY_BYTES", 1024 * 1024)),
            max_file_bytes=int(env.get("MAX_FILE_BYTES", 64 * 1024 * 1024)),
            registry_url=env.get("REGISTRY_URL", f"http://127.0.0.1:{ports['registry']}"),
            provisioning_url=env.get("PROVISIONING_URL", f"http://127.0.0.1:{ports['provisioning']}"),
            public_url=env.get("PUBLIC_URL", "http://localhost:8080").rstrip("/"),
            device_client_id=env.get("DEVICE_CLIENT_ID", "signage-player"),
            device_verification_uri=env.get("DEVICE_VERIFICATION_URI", ""),
            device_code_ttl_seconds=int(env.get("DEVICE_CODE_TTL_SECONDS", 600)),
            device_poll_interval_seconds=int(env.get("DEVICE_POLL_INTERVAL_SECONDS", 5)),
            nats_replicas=int(env.get("NATS_REPLICAS", 1)),
            host=env.get("HOST", "0.0.0.0"),
            workers=int(env.get("WORKERS", 1)),
            offline_after_intervals=float(env.get("OFFLINE_AFTER_INTERVALS", 3)),
            presence_check_seconds=float(env.get("PRESENCE_CHECK_SECONDS", 5)),
            heartbeat_retention_hours=float(env.get("HEARTBEAT_RETENTION_HOURS", 7 * 24)),
            sse_keepalive_seconds=float(env.get("SSE_KEEPALIVE_SECONDS", 15)),
            sse_buffer=int(env.get("SSE_BUFFER", 1000)),
            gateway_max_lag_ms=int(env.get("GATEWAY_MAX_LAG_MS", 250)),
            gateway_max_pending_reports=int(env.get("GATEWAY_MAX_PENDING_REPORTS", 2000)),
            ports=ports,
            log_format=env.get("LOG_FORMAT", "console"),
            log_level=env.get("LOG_LEVEL", "info"),
        )


def _split(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())
