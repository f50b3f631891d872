"""Settings from the environment: every default, the bounds, and a message naming the variable for
each kind of wrong value; the local stack's settings and the table the docs carry."""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys
from pathlib import Path

import certifi
import msgspec
import pytest

from devstack.services import ROOT
from devstack.settings import LocalSettings
from shared.environment import SettingsError, check_env, environment, from_env, markdown_table, rows, to_env
from shared.settings import DEFAULT_PORTS, Settings

BASE = {"NATS_URL": "nats://127.0.0.1:4222"}


def settings(**env: str) -> Settings:
    return Settings.from_env({**BASE, **env})


def error(**env: str) -> str:
    with pytest.raises(SettingsError) as raised:
        settings(**env)
    return str(raised.value)


def test_defaults():
    s = settings()
    assert s.nats_url == ("nats://127.0.0.1:4222",)
    assert (s.database_url, s.operator_token, s.token_signing_key) == ("", "", "")
    assert (s.token_verify_keys, s.trusted_proxies) == ((), ())
    assert (s.token_ttl_seconds, s.token_issuer, s.code_ttl_seconds) == (3600, "signage", 900)
    assert s.client_secret_ttl_seconds == 0
    assert (s.register_failures_per_window, s.register_failures_global_per_window) == (10, 1000)
    assert s.register_failure_window_seconds == 60
    assert (s.max_body_bytes, s.max_file_bytes) == (1024 * 1024, 64 * 1024 * 1024)
    assert (s.registry_url, s.provisioning_url) == ("http://127.0.0.1:8081", "http://127.0.0.1:8082")
    assert s.public_url == "http://localhost:8080"
    assert (s.device_client_id, s.verification_uri) == ("signage-player", "http://localhost:8080/activate")
    assert (s.device_code_ttl_seconds, s.device_poll_interval_seconds) == (600, 5)
    assert (s.nats_replicas, s.host, s.workers) == (1, "0.0.0.0", 1)
    assert (s.gateway_max_lag_ms, s.gateway_max_pending_reports) == (250, 2000)
    assert (s.offline_after_intervals, s.presence_check_seconds, s.heartbeat_retention_hours) == (3, 5, 72)
    assert (s.sse_keepalive_seconds, s.sse_buffer) == (15, 1000)
    assert (
        s.ports
        == DEFAULT_PORTS
        == {
            "entrypoint": 8080,
            "registry": 8081,
            "provisioning": 8082,
            "device-gateway": 8083,
            "heartbeat": 8084,
        }
    )
    assert (s.log_format, s.log_level) == ("console", "info")


def test_values_are_converted_from_their_variables():
    s = settings(
        WORKERS="4",
        PRESENCE_CHECK_SECONDS="0.5",
        TOKEN_VERIFY_KEYS=" a, b ,",
        TRUSTED_PROXIES="10.0.0.1/8,::1",
        DEVICE_GATEWAY_PORT="9083",
        LOG_LEVEL="WARNING",
        LOG_FORMAT="json",
    )
    assert (s.workers, s.presence_check_seconds, s.token_verify_keys) == (4, 0.5, ("a", "b"))
    assert s.trusted_proxies == (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("::1/128"))
    assert s.ports["device-gateway"] == 9083
    assert (s.log_level, s.log_format) == ("warning", "json")


def test_an_empty_variable_is_as_good_as_unset():
    assert settings(WORKERS="", PUBLIC_URL="") == settings()


def test_urls_follow_the_ports_unless_set():
    s = settings(ENTRYPOINT_PORT="9000", REGISTRY_PORT="9001", PROVISIONING_PORT="9002")
    assert (s.public_url, s.verification_uri) == ("http://localhost:9000", "http://localhost:9000/activate")
    assert (s.registry_url, s.provisioning_url) == ("http://127.0.0.1:9001", "http://127.0.0.1:9002")
    s = settings(REGISTRY_PORT="9001", REGISTRY_URL="http://registry:80", PUBLIC_URL="https://api.example/")
    assert (s.registry_url, s.public_url) == ("http://registry:80", "https://api.example")


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("WORKERS", "two", "WORKERS must be an integer from 1 to 64, got 'two'"),
        ("WORKERS", "-3", "WORKERS must be an integer from 1 to 64, got '-3'"),
        ("WORKERS", "65", "WORKERS must be an integer from 1 to 64, got '65'"),
        ("WORKERS", "1.5", "WORKERS must be an integer from 1 to 64, got '1.5'"),
        ("REGISTRY_PORT", "70000", "REGISTRY_PORT must be an integer from 1 to 65535, got '70000'"),
        (
            "CLIENT_SECRET_TTL_SECONDS",
            "-1",
            "CLIENT_SECRET_TTL_SECONDS must be an integer from 0 to 315360000, got '-1'",
        ),
        (
            "PRESENCE_CHECK_SECONDS",
            "0",
            "PRESENCE_CHECK_SECONDS must be a number greater than 0 and at most 3600, got '0'",
        ),
        (
            "HEARTBEAT_RETENTION_HOURS",
            "soon",
            "HEARTBEAT_RETENTION_HOURS must be a number greater than 0 and at most 87600, got 'soon'",
        ),
        (
            "HEARTBEAT_RETENTION_HOURS",
            "inf",
            "HEARTBEAT_RETENTION_HOURS must be a number greater than 0 and at most 87600, got 'inf'",
        ),
        (
            "LOG_LEVEL",
            "verbose",
            "LOG_LEVEL must be one of debug, info, warning, error, critical, got 'verbose'",
        ),
        ("LOG_FORMAT", "xml", "LOG_FORMAT must be one of console, json, auto, got 'xml'"),
        (
            "TRUSTED_PROXIES",
            "10.0.0.0/8,proxy",
            "TRUSTED_PROXIES must be comma-separated networks such as 10.0.0.0/8, got '10.0.0.0/8,proxy'",
        ),
        ("TOKEN_ISSUER", "  ", "TOKEN_ISSUER must be non-empty text, got '  '"),
    ],
)
def test_a_wrong_value_is_named_with_what_is_accepted(variable, value, message):
    assert error(**{variable: value}) == message


def test_bounds_are_inclusive():
    assert settings(WORKERS="1").workers == 1
    assert settings(WORKERS="64").workers == 64
    assert settings(REGISTRY_PORT="65535").registry_port == 65535
    assert settings(DEVICE_POLL_INTERVAL_SECONDS="0").device_poll_interval_seconds == 0


def test_a_missing_required_setting_is_named():
    with pytest.raises(SettingsError, match=r"^NATS_URL must be set: NATS servers, comma-separated"):
        Settings.from_env({"DATABASE_URL": "postgresql://x"})


def test_nats_url_is_a_seed_list_as_every_nats_client_reads_it():
    three = settings(NATS_URL="nats://a:4222, nats://b:4222,tls://user:pw@c:4222,")
    assert three.nats_url == ("nats://a:4222", "nats://b:4222", "tls://user:pw@c:4222")
    assert settings(NATS_URL="nats-0.nats-headless:4222,10.0.0.7").nats_url == (
        "nats://nats-0.nats-headless:4222",
        "nats://10.0.0.7",
    )
    assert settings(NATS_URL="ws://a:8080,wss://b").nats_url == ("ws://a:8080", "wss://b")
    assert Settings.from_env(to_env(three)) == three


NATS_URLS = "comma-separated NATS server URLs such as nats://a:4222,nats://b:4222"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("nats://a:4222,http://b:4222", f"NATS_URL must be {NATS_URLS}; 'http://b:4222' is not one"),
        ("nats://a:4222,nats://b:42x2", f"NATS_URL must be {NATS_URLS}; 'nats://b:42x2' is not one"),
        ("nats://a:99999", f"NATS_URL must be {NATS_URLS}; 'nats://a:99999' is not one"),
        ("nats://a:4222/x", f"NATS_URL must be {NATS_URLS}; 'nats://a:4222/x' is not one"),
        ("nats://:4222", f"NATS_URL must be {NATS_URLS}; 'nats://:4222' is not one"),
        # The password of a wrong entry stays out of the message (and so of the logs).
        ("nats://u:secret@a:x", f"NATS_URL must be {NATS_URLS}; 'nats://u:***@a:x' is not one"),
        (" , ", f"NATS_URL must be {NATS_URLS}, got ' , '"),
        (
            "nats://a:4222,ws://b:8080",
            "NATS_URL cannot mix websocket (ws://, wss://) and nats:// or tls:// servers",
        ),
    ],
)
def test_a_wrong_nats_server_is_named(value, message):
    assert error(NATS_URL=value) == message


def test_check_env_checks_only_what_is_set():
    """What `make run` does before it starts servers whose URLs it does not know yet."""
    assert check_env(Settings, {"WORKERS": "2"}) == {"workers": 2}
    with pytest.raises(SettingsError, match=r"^WORKERS"):
        check_env(Settings, {"WORKERS": "0"})


def test_to_env_reads_back_to_the_same_settings():
    s = settings(
        TRUSTED_PROXIES="127.0.0.1/32,::1/128",
        TOKEN_VERIFY_KEYS="k1,k2",
        OFFLINE_AFTER_INTERVALS="2.5",
        HEARTBEAT_PORT="9999",
        LOG_LEVEL="debug",
    )
    assert Settings.from_env(to_env(s)) == s


def test_environment_names_the_variables_of_fields_and_refuses_unknown_ones():
    assert environment(Settings, device_gateway_port=9000, workers=2, trusted_proxies=()) == {
        "DEVICE_GATEWAY_PORT": "9000",
        "WORKERS": "2",
        "TRUSTED_PROXIES": "",
    }
    with pytest.raises(TypeError, match="worker"):
        environment(Settings, worker=2)


def test_the_local_stack_settings():
    local = from_env(LocalSettings, {})
    assert (local.postgres_port, local.nats_port, local.data) == (55432, 54222, ROOT / ".data")
    assert from_env(LocalSettings, {"DATA_DIR": "/tmp/x"}).data == Path("/tmp/x")
    with pytest.raises(SettingsError, match=r"^NATS_PORT must be an integer from 1 to 65535, got 'x'$"):
        from_env(LocalSettings, {"NATS_PORT": "x"})


def test_every_setting_has_a_row_with_its_description():
    names = [row.name for row in rows(Settings)]
    assert names == [name.upper() for name in Settings.__struct_fields__]
    assert all(row.description for cls in (Settings, LocalSettings) for row in rows(cls))
    workers = next(row for row in rows(Settings) if row.name == "WORKERS")
    assert (workers.kind, workers.default, workers.bound) == ("integer", "1", "1 to 64")
    registry_url = next(row for row in rows(Settings) if row.name == "REGISTRY_URL")
    assert registry_url.default == "http://127.0.0.1:$REGISTRY_PORT"
    table = markdown_table(Settings, LocalSettings)
    for name in (*Settings.__struct_fields__, *LocalSettings.__struct_fields__):
        assert f"| `{name.upper()}` |" in table


def test_a_service_refuses_to_start_with_one_line_and_status_2():
    env = {**os.environ, **BASE, "WORKERS": "two", "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "services", "registry"], env=env, capture_output=True, text=True, timeout=30
    )
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == "WORKERS must be an integer from 1 to 64, got 'two'\n"


def test_replace_keeps_resolved_urls():
    """Tests change settings with msgspec.structs.replace; a URL once resolved stays as it was."""
    s = msgspec.structs.replace(settings(), registry_port=9001)
    assert (s.registry_port, s.registry_url) == (9001, "http://127.0.0.1:8081")


def test_a_wrong_nats_ca_bundle_is_named_at_start(tmp_path: Path) -> None:
    """Checked when the settings are read: one line naming the variable, not a traceback from the
    first connection to the bus."""
    missing = tmp_path / "missing.pem"
    assert error(NATS_TLS_CA_FILE=str(missing)) == (
        f"NATS_TLS_CA_FILE must name a CA bundle (PEM) to read; {str(missing)!r}: No such file or directory"
    )
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    assert error(NATS_TLS_CA_FILE=str(garbage)).startswith(
        f"NATS_TLS_CA_FILE must name a CA bundle (PEM) to read; {str(garbage)!r}: "
    )
    bundle = tmp_path / "ca.pem"
    bundle.write_bytes(Path(certifi.where()).read_bytes())  # any real bundle
    assert settings(NATS_TLS_CA_FILE=str(bundle)).nats_tls_ca_file == str(bundle)
