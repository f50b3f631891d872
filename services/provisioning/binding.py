"""Making and ending a binding: the one place every flow goes through.

Codes, provisioning tokens, recovery, serials, claims and device authorizations differ in how a
device proves it may bind; what binding *is* does not change: a device row, a key stored as a
hash, the key's entry in the gateways' KV bucket, a ``device.bound`` event, an audit row — all in
the caller's transaction (which has locked the screen), all through the outbox. Unbinding is the
mirror image (revoke, logout); a revoked key's end is its row and its entry forgotten after a
retention.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from services.provisioning import queries
from services.provisioning.models import Device, DeviceInfo, Registered, ReportedDeviceInfo
from services.provisioning.queries.screens import ScreenCopy
from shared import outbox
from shared.auth import new_secret, secret_hash
from shared.db import Connection
from shared.events import DeviceBound, DeviceRevoked
from shared.projections import DEVICE_KEYS_BUCKET, DeviceKeyEntry, device_key_digest, device_key_name


async def bind(
    conn: Connection,
    screen: ScreenCopy,
    device_info: ReportedDeviceInfo,
    *,
    method: str,
    actor: str | None,
    client_address: str | None,
    code: str | None = None,
) -> Registered:
    """Bind a device to ``screen`` (locked by the caller, free of an active device). ``actor``
    None: the device bound itself (a code, token or serial), audited as ``device:<its id>``.

    A TV that reports a ``hardwareId`` gets a recovery secret. If that hardware was the screen's
    device before (it was unbound, then the TV was reset and paired again with a new code or
    token for the same screen), it gets its old ``deviceId`` back instead of a new one.
    """
    api_key = new_secret("dak_")
    key_hash = device_key_digest(api_key)
    recovery_secret = new_secret("drs_") if device_info.hardware_id else None
    previous = (
        await queries.binding.recoverable_device(conn, screen.tenant_id, screen.id, device_info.hardware_id)
        if device_info.hardware_id
        else None
    )
    device_id = previous or uuid.uuid4()
    device, binding_seq = await queries.binding.bind_device(
        conn,
        device_id,
        tenant_id=screen.tenant_id,
        screen_id=screen.id,
        key_hash=key_hash,
        device_info=device_info,
        recovery_secret_hash=secret_hash(recovery_secret) if recovery_secret else None,
        method=method,
        actor=device_actor(device_id) if actor is None else actor,
        client_address=client_address,
        code=code,
    )
    await _announce(conn, device, binding_seq, key_hash)
    return Registered(
        device_id=device.id,
        screen_id=device.screen_id,
        api_key=api_key,
        tenant_id=device.tenant_id,
        config=screen.config,
        recovery_secret=recovery_secret,
    )


async def bind_claimed(
    conn: Connection,
    screen: ScreenCopy,
    device_info: DeviceInfo,
    *,
    device_id: uuid.UUID,
    key_hash: bytes,
    actor: str,
    client_address: str | None,
) -> Device:
    """Bind a pre-provisioned device with the id and key it was flashed with (claim mode)."""
    device, binding_seq = await queries.binding.bind_device(
        conn,
        device_id,
        tenant_id=screen.tenant_id,
        screen_id=screen.id,
        key_hash=key_hash,
        device_info=device_info,
        recovery_secret_hash=None,
        method="claim",
        actor=actor,
        client_address=client_address,
    )
    await _announce(conn, device, binding_seq, key_hash)
    return device


async def _announce(conn: Connection, device: Device, binding_seq: int, key_hash: bytes) -> None:
    """The key to every gateway, the binding to registry: both through the outbox."""
    await _publish_key(conn, key_hash, device, "active")
    await outbox.add_event(
        conn,
        DeviceBound(
            tenant_id=device.tenant_id,
            device_id=device.id,
            screen_id=device.screen_id,
            binding_seq=binding_seq,
            bound_at=device.registered_at,
        ),
    )


async def unbind(
    conn: Connection,
    device: Device,
    *,
    reason: str | None,
    method: str,
    actor: str,
    client_address: str | None,
) -> datetime:
    """Suspend ``device`` (locked by the caller, with its screen): every key dies on every gateway,
    the screen returns to provisioning. Returns when."""
    revoked_at = await queries.binding.suspend_device(conn, device.id, reason)
    for key_hash in await queries.binding.revoke_keys(conn, device.id):
        await _publish_key(conn, key_hash, device, "revoked")
    binding_seq = await queries.binding.next_binding_seq(conn, device.screen_id)
    await outbox.add_event(
        conn,
        DeviceRevoked(
            tenant_id=device.tenant_id,
            device_id=device.id,
            screen_id=device.screen_id,
            binding_seq=binding_seq,
            reason=reason,
            revoked_at=revoked_at,
        ),
    )
    await queries.audit.add_audit(
        conn,
        device,
        action="unbound",
        method=method,
        actor=actor,
        client_address=client_address,
        reason=reason,
    )
    return revoked_at


async def replace_key(conn: Connection, device: Device, *, client_address: str | None) -> str:
    """A fresh key for an active device that lost its own (recovery); the old keys die."""
    for key_hash in await queries.binding.revoke_keys(conn, device.id):
        await _publish_key(conn, key_hash, device, "revoked")
    api_key = new_secret("dak_")
    key_hash = device_key_digest(api_key)
    await queries.binding.add_key(conn, device.id, key_hash)
    await _publish_key(conn, key_hash, device, "active")
    await queries.audit.add_audit(
        conn,
        device,
        action="recovered",
        method="recovery",
        actor=device_actor(device.id),
        client_address=client_address,
    )
    return api_key


async def _publish_key(
    conn: Connection, key_hash: bytes, device: Device, status: Literal["active", "revoked"]
) -> None:
    await outbox.put_kv(
        conn,
        DEVICE_KEYS_BUCKET,
        device_key_name(key_hash),
        DeviceKeyEntry(
            device_id=device.id, screen_id=device.screen_id, tenant_id=device.tenant_id, status=status
        ),
    )


async def forget_revoked_keys(conn: Connection, kept_seconds: float, batch: int) -> int:
    """Forget at most ``batch`` keys revoked ``kept_seconds`` ago: their rows, and (queued in the
    same transaction, so after their "revoked" puts) their entries in every gateway's bucket and
    memory. A TV presenting one is then unknown: 401 ``unauthorized`` where it was
    ``device_revoked``. Returns how many went."""
    async with conn.transaction():
        digests = await queries.pruning.delete_revoked_keys(conn, kept_seconds, batch)
        for digest in digests:
            await outbox.purge_kv(conn, DEVICE_KEYS_BUCKET, device_key_name(digest))
    return len(digests)


def device_actor(device_id: uuid.UUID) -> str:
    return f"device:{device_id}"
