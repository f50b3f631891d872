"""The gateway's packed device-key entries, without a server: the 49-byte layout, reading it back,
and the path of a ``device-keys`` KV entry from provisioning's bytes to a poll's lookup."""

from __future__ import annotations

import uuid

import msgspec
import pytest

from services.device_gateway.projections import DeviceKey, Projections, pack_key_entry
from shared.projections import DeviceKeyEntry, device_key_digest, device_key_name

NIL = uuid.UUID(int=0)
MAX = uuid.UUID(int=2**128 - 1)
DEVICE = uuid.UUID("11111111-2222-3333-4444-555555555555")
API_KEY = "dak_" + "k" * 43


def entry(status: str = "active", device: uuid.UUID = DEVICE) -> DeviceKeyEntry:
    return msgspec.convert(
        {"deviceId": str(device), "screenId": str(NIL), "tenantId": str(MAX), "status": status},
        DeviceKeyEntry,
    )


@pytest.mark.parametrize(("status", "flag"), [("active", b"\x01"), ("revoked", b"\x00")])
def test_the_layout_is_device_screen_tenant_then_status(status: str, flag: bytes) -> None:
    assert pack_key_entry(entry(status)) == DEVICE.bytes + NIL.bytes + MAX.bytes + flag


@pytest.mark.parametrize("device", [NIL, MAX, DEVICE])
def test_ids_of_all_zero_or_all_one_bits_read_back_unchanged(device: uuid.UUID) -> None:
    key = DeviceKey(pack_key_entry(entry(device=device)))
    assert (key.device_id, key.screen_id, key.tenant_id) == (device, NIL, MAX)
    assert key.screen == NIL.bytes
    assert key.revoked is False


@pytest.mark.parametrize("status", [b"", b"\x02", b"\x01\x01"])
def test_any_status_byte_but_active_reads_as_revoked(status: bytes) -> None:
    # Fail closed: a damaged entry never lets a key through as active.
    assert DeviceKey(DEVICE.bytes + NIL.bytes + MAX.bytes + status).revoked is True


def kv_value(status: str = "active") -> bytes:
    """The value provisioning's outbox puts in ``device-keys`` (a JSON-encoded entry)."""
    return msgspec.json.encode(entry(status))


def test_a_key_put_under_its_digest_name_is_found_by_the_key_itself() -> None:
    projections = Projections()
    projections.apply_key(device_key_name(device_key_digest(API_KEY)), kv_value())
    found = projections.lookup(API_KEY)
    assert found is not None
    assert (found.device_id, found.tenant_id, found.revoked) == (DEVICE, MAX, False)
    assert projections.lookup(API_KEY[:-1] + "K") is None


def test_a_revoke_replaces_the_entry_and_a_delete_forgets_it() -> None:
    projections = Projections()
    name = device_key_name(device_key_digest(API_KEY))
    projections.apply_key(name, kv_value())
    projections.apply_key(name, kv_value("revoked"))
    found = projections.lookup(API_KEY)
    assert found is not None and found.revoked is True
    assert len(projections.keys) == 1
    projections.apply_key(name, None)
    assert projections.lookup(API_KEY) is None and projections.keys == {}
    projections.apply_key(name, None)  # deleting what is gone is no error (a replayed delete)


def test_unknown_fields_and_a_newer_version_are_read() -> None:
    value = msgspec.json.encode({**msgspec.json.decode(kv_value()), "v": 2, "firmware": "9.1"})
    projections = Projections()
    projections.apply_key(device_key_name(device_key_digest(API_KEY)), value)
    found = projections.lookup(API_KEY)
    assert found is not None and found.device_id == DEVICE


@pytest.mark.parametrize(
    ("name", "value", "error"),
    [
        ("not-hex", kv_value(), ValueError),
        (device_key_name(device_key_digest(API_KEY)), b'{"deviceId": "x"}', msgspec.ValidationError),
        (
            device_key_name(device_key_digest(API_KEY)),
            kv_value().replace(b'"active"', b'"suspended"'),
            msgspec.ValidationError,
        ),
        (device_key_name(device_key_digest(API_KEY)), b"\xff", msgspec.DecodeError),
    ],
)
def test_a_bad_entry_raises_what_the_watcher_logs_and_skips(name: str, value: bytes, error: type) -> None:
    projections = Projections()
    with pytest.raises(error):
        projections.apply_key(name, value)
    assert projections.keys == {}
