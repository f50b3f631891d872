"""Every flow that hands out a credential, walked once through the entry point: what each answer
said (for the no-store walk) and every credential it handed out (for the log scans)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import aiohttp
from multidict import CIMultiDictProxy

from shared.auth import DEVICE_CODE_GRANT
from tests.stack import DEVICE_INFO, Stack


@dataclass
class Minted:
    stack: Stack
    # "METHOD /path/{template}" -> the headers of its answer
    answers: dict[str, CIMultiDictProxy[str]] = field(default_factory=dict)
    # what it is -> the credential
    credentials: dict[str, str] = field(default_factory=dict)
    tenant_token: str = ""

    async def answer(self, operation: str, status: int, **kwargs: Any) -> Any:
        """Call ``operation`` ("POST /v1/tenants", its path as given unless ``path`` says otherwise),
        expect ``status``, and keep its answer's headers."""
        method, _, path = operation.partition(" ")
        async with self.stack.http.request(method, kwargs.pop("path", path), **kwargs) as response:
            body = await response.json()
            assert response.status == status, (operation, response.status, body)
            self.answers[operation] = response.headers
            return body


DEVICE_FORM = {
    "manufacturer": "LG",
    "model": "webOS",
    "osVersion": "6",
    "appVersion": "1",
    "macAddress": "00:11:22:33:44:77",
    "ipAddress": "10.0.0.9",
}


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def mint_every_credential(stack: Stack) -> Minted:
    minted = Minted(stack)
    operator = stack.settings.operator_token
    minted.credentials["operator token"] = operator

    tenant = await minted.answer("POST /v1/tenants", 201, json={"name": "Minted"}, headers=_bearer(operator))
    client = tenant["client"]
    minted.credentials["client secret"] = client["clientSecret"]
    issued = await minted.answer(
        "POST /v1/tenants/{id}/clients",
        201,
        path=f"/v1/tenants/{tenant['id']}/clients",
        headers=_bearer(operator),
    )
    minted.credentials["operator-issued client secret"] = issued["clientSecret"]
    token = await minted.answer(
        "POST /oauth/token",
        200,
        data={"grant_type": "client_credentials"},
        headers={"Authorization": aiohttp.encode_basic_auth(client["clientId"], client["clientSecret"])},
    )
    access = minted.tenant_token = minted.credentials["access token"] = token["access_token"]

    iat = await minted.answer("POST /v1/clients/initial-access-tokens", 201, json={}, headers=_bearer(access))
    minted.credentials["initial access token"] = iat["token"]
    registered_client = await minted.answer(
        "POST /oauth/register", 201, json={}, headers=_bearer(iat["token"])
    )
    minted.credentials["registered client secret"] = registered_client["client_secret"]

    screen = await stack.screen(access)
    code = await minted.answer(
        "POST /v1/devices/provisioning-codes", 201, json={"screenId": screen["id"]}, headers=_bearer(access)
    )
    minted.credentials["pairing code"] = code["code"]
    registered = await minted.answer(
        "POST /devices/register",
        201,
        json={"pairingCode": code["code"], "deviceInfo": {**DEVICE_INFO, "hardwareId": "HW-MINTED"}},
    )
    minted.credentials |= {
        "device key": registered["apiKey"],
        "recovery secret": registered["recoverySecret"],
    }
    recovered = await minted.answer(
        "POST /devices/recover",
        200,
        json={"hardwareId": "HW-MINTED", "recoverySecret": registered["recoverySecret"]},
    )
    minted.credentials["recovered device key"] = recovered["apiKey"]
    if "recoverySecret" in recovered:  # once recovery secrets rotate
        minted.credentials["rotated recovery secret"] = recovered["recoverySecret"]

    provisioning = await minted.answer(
        "POST /v1/devices/provisioning-tokens",
        201,
        json={"screenId": (await stack.screen(access, "Provisioned"))["id"]},
        headers=_bearer(access),
    )
    minted.credentials["provisioning token"] = provisioning["token"]
    provisioned = await minted.answer(
        "POST /devices/provision",
        201,
        json={"provisioningToken": provisioning["token"], "deviceInfo": DEVICE_INFO},
    )
    minted.credentials["provisioned device key"] = provisioned["apiKey"]

    serial_screen = await stack.screen(access, "Serial")
    assignment = {"serials": [{"serial": "SN-MINTED-1", "tenantId": tenant["id"]}]}
    status, body, _ = await stack.call("POST", "/v1/serials", token=operator, json=assignment)
    assert status == 200, body  # the operator assigns the serial to the tenant first
    upload = {"serials": [{"serial": "SN-MINTED-1", "screenId": serial_screen["id"]}]}
    status, body, _ = await stack.call("POST", "/v1/devices/serials", token=access, json=upload)
    assert status == 200, body
    status, body, _ = await stack.call(
        "POST", "/v1/devices/serials/SN-MINTED-1/enable", token=access, json={}
    )
    assert status == 200, body
    activated = await minted.answer(
        "POST /devices/activate", 201, json={"serial": "SN-MINTED-1", "deviceInfo": DEVICE_INFO}
    )
    minted.credentials["activated device key"] = activated["apiKey"]

    made = await minted.answer(
        "POST /v1/devices/pre-provisioned", 201, json={"count": 1}, headers=_bearer(operator)
    )
    factory = made["items"][0]
    minted.credentials["factory device key"] = factory["apiKey"]
    mode = await minted.answer(
        "POST /v1/device/claim-mode",
        200,
        json={"deviceId": factory["deviceId"], "deviceInfo": DEVICE_INFO},
        headers=_bearer(factory["apiKey"]),
    )
    minted.credentials["claim code"] = mode["claimCode"]

    started = await minted.answer(
        "POST /oauth/device_authorization",
        200,
        data={"client_id": stack.settings.device_client_id, **DEVICE_FORM},
    )
    minted.credentials["device code"] = started["device_code"]
    minted.credentials["user code"] = started["user_code"]
    status, body, _ = await stack.call(
        "POST",
        f"/v1/devices/device-authorizations/{started['user_code']}/approve",
        token=access,
        json={"screenId": (await stack.screen(access, "Device flow"))["id"]},
    )
    assert status == 200, body
    polled = await minted.answer(
        "POST /oauth/token (device code)",
        200,
        path="/oauth/token",
        data={
            "grant_type": DEVICE_CODE_GRANT,
            "device_code": started["device_code"],
            "client_id": stack.settings.device_client_id,
        },
    )
    minted.credentials["device-flow device key"] = polled["access_token"]
    return minted
