"""Secrets are handed out once: the device key is never readable again, and no credential of any
flow is stored in clear (only its hash) or written to a log line."""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any

import asyncpg
import structlog

from tests.stack import Stack


def _field_names(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [name for key, item in value.items() for name in (key, *_field_names(item))]
    if isinstance(value, list):
        return [name for item in value for name in _field_names(item)]
    return []


async def test_the_device_key_is_never_readable_again(stack: Stack) -> None:
    tenant = await stack.tenant()
    token = tenant["token"]
    screen, registered = await stack.paired_device(token)
    key, device_id = registered["apiKey"], registered["deviceId"]
    assert key.startswith("dak_") and len(key) > 40
    key_hash = hashlib.sha256(key.encode()).digest()
    secret_part = key.removeprefix("dak_")
    forbidden = (key, secret_part, key_hash.hex())

    status, device, _ = await stack.call("GET", f"/v1/devices/{device_id}", token=token)
    assert status == 200, device
    status, listed, _ = await stack.call("GET", f"/v1/devices?screenId={screen['id']}", token=token)
    assert status == 200, listed
    assert [d["id"] for d in listed["items"]] == [device_id]
    for what, body in (("device", device), ("list", listed)):
        text = json.dumps(body)
        for secret in forbidden:
            assert secret not in text, what
        names = _field_names(body)
        assert "apiKey" not in names, what
        assert [n for n in names if "key" in n.lower()] == [], (what, names)

    conn = await asyncpg.connect(stack.settings.database_url)
    try:
        rows = await conn.fetch(
            "SELECT key_hash, revoked_at FROM provisioning.device_keys WHERE device_id = $1",
            uuid.UUID(device_id),
        )
        assert [(bytes(r["key_hash"]), r["revoked_at"]) for r in rows] == [(key_hash, None)]

        tables = await conn.fetch(
            "SELECT table_schema, table_name FROM information_schema.tables"
            " WHERE table_schema IN ('provisioning', 'registry', 'heartbeat')"
            " AND table_type = 'BASE TABLE' ORDER BY 1, 2"
        )
        table_names = {(t["table_schema"], t["table_name"]) for t in tables}
        assert {
            ("provisioning", "device_keys"),
            ("provisioning", "devices"),
            ("registry", "screens"),
        } <= table_names
        scanned = 0
        device_rows = 0
        for table in tables:
            qualified = f'"{table["table_schema"]}"."{table["table_name"]}"'
            for row in await conn.fetch(f"SELECT row_to_json(t)::text AS j FROM {qualified} t"):
                scanned += 1
                # bytea columns render as hex in JSON: look for the key's bytes in hex too.
                for secret in (key, secret_part, key.encode().hex(), secret_part.encode().hex()):
                    assert secret not in row["j"], (qualified, row["j"][:300])
                device_rows += device_id in row["j"]
        assert scanned > 0 and device_rows > 0  # the scan did see this device's rows

        bytea_columns = await conn.fetch(
            "SELECT table_schema, table_name, column_name FROM information_schema.columns"
            " WHERE table_schema IN ('provisioning', 'registry', 'heartbeat') AND data_type = 'bytea'"
        )
        for column in bytea_columns:
            qualified = f'"{column["table_schema"]}"."{column["table_name"]}"'
            name = f'"{column["column_name"]}"'
            values = await conn.fetch(f"SELECT {name} AS v FROM {qualified} WHERE {name} IS NOT NULL")
            for value in values:
                raw = bytes(value["v"])
                assert key.encode() not in raw and secret_part.encode() not in raw, qualified
    finally:
        await conn.close()


async def test_no_secret_of_any_flow_is_stored_in_clear_or_logged(stack: Stack) -> None:
    """Every credential the flows hand out exists only in its holder's hands: the database has its
    hash at most, and no log line carries it."""
    secrets: dict[str, str] = {}
    with structlog.testing.capture_logs() as logs:
        tenant = await stack.tenant()
        token = tenant["token"]
        secrets |= {"client secret": tenant["client"]["clientSecret"], "access token": token}
        screen = await stack.screen(token)
        code = await stack.code(token, screen["id"])
        _, registered = await stack.register(code["code"], hardwareId="HW-SECRET")
        secrets |= {"device key": registered["apiKey"], "recovery secret": registered["recoverySecret"]}
        status, recovered, _ = await stack.call(
            "POST",
            "/devices/recover",
            json={"hardwareId": "HW-SECRET", "recoverySecret": registered["recoverySecret"]},
        )
        assert status == 200, recovered
        secrets["recovered key"] = recovered["apiKey"]
        # The recovery spent the first secret and answered with the one kept from now on.
        secrets["spent recovery secret"] = secrets.pop("recovery secret")
        secrets["recovery secret"] = recovered["recoverySecret"]
        other = await stack.screen(token, "Other")
        _, provisioning, _ = await stack.call(
            "POST", "/v1/devices/provisioning-tokens", token=token, json={"screenId": other["id"]}
        )
        secrets["provisioning token"] = provisioning["token"]
        _, iat, _ = await stack.call("POST", "/v1/clients/initial-access-tokens", token=token, json={})
        async with stack.http.post(
            "/oauth/register", json={}, headers={"Authorization": f"Bearer {iat['token']}"}
        ) as response:
            client = await response.json()
        secrets |= {"initial access token": iat["token"], "registered client secret": client["client_secret"]}
        async with stack.http.post(
            "/oauth/device_authorization",
            data={
                "client_id": "signage-player",
                "manufacturer": "LG",
                "model": "webOS",
                "osVersion": "6",
                "appVersion": "1",
                "macAddress": "00:11:22:33:44:77",
                "ipAddress": "10.0.0.9",
            },
        ) as response:
            secrets["device code"] = (await response.json())["device_code"]
        _, made, _ = await stack.call(
            "POST", "/v1/devices/pre-provisioned", token=stack.settings.operator_token, json={"count": 1}
        )
        secrets["factory key"] = made["items"][0]["apiKey"]
        secrets["operator token"] = stack.settings.operator_token
    assert all(len(secret) > 20 for secret in secrets.values()), secrets

    logged = "\n".join(str(entry) for entry in logs)
    assert "device_registered" in logged  # the capture did see the services' lines
    for what, secret in secrets.items():
        assert secret not in logged, f"{what} in a log line"

    conn = await asyncpg.connect(stack.settings.database_url)
    try:
        tables = await conn.fetch(
            "SELECT table_schema, table_name FROM information_schema.tables"
            " WHERE table_schema IN ('provisioning', 'registry', 'heartbeat') AND table_type = 'BASE TABLE'"
        )
        dump = "\n".join(
            [
                row["j"]
                for table in tables
                for row in await conn.fetch(
                    "SELECT row_to_json(t)::text AS j"
                    f' FROM "{table["table_schema"]}"."{table["table_name"]}" t'
                )
            ]
        )
    finally:
        await conn.close()
    assert registered["deviceId"] in dump  # the dump did see this test's rows
    for what, secret in secrets.items():
        if what in ("access token", "operator token"):
            continue  # never stored at all: the token is verified by signature, the operator's is a setting
        body = secret.split("_", 1)[1]
        for form in (secret, body, secret.encode().hex(), body.encode().hex()):
            assert form not in dump, f"{what} stored in clear"
        kept = hashlib.sha256(secret.encode()).hexdigest() in dump
        assert kept != what.startswith("spent"), f"{what}: its hash is what is kept, until it is spent"
