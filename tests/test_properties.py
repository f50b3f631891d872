"""Properties of the validators and generators, over inputs hypothesis makes up (no stack)."""

from __future__ import annotations

import ipaddress
import re
from types import SimpleNamespace

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from services.device_gateway.files import _range
from services.provisioning.device_authorization import USER_CODE_ALPHABET, new_user_code, normalized, shown
from services.provisioning.models import MAC_PATTERN, PAIRING_CODE_PATTERN, SERIAL_PATTERN, DeviceInfo
from services.provisioning.queries.codes import CODE_ALPHABET, new_code

DEVICE = {"manufacturer": "LG", "model": "webOS", "osVersion": "6", "appVersion": "1"}


def device_info(mac: str = "00:11:22:33:44:55", ip: str = "10.0.0.1") -> DeviceInfo:
    return msgspec.convert({**DEVICE, "macAddress": mac, "ipAddress": ip}, DeviceInfo)


@settings(max_examples=300)
@given(st.integers())
def test_pairing_and_user_codes_are_well_formed(_: int) -> None:
    code = new_code()
    assert re.match(PAIRING_CODE_PATTERN, code) and set(code) <= set(CODE_ALPHABET)
    user_code = new_user_code()
    assert len(user_code) == 8 and set(user_code) <= set(USER_CODE_ALPHABET)
    assert normalized(shown(user_code)) == user_code
    assert normalized(shown(user_code).lower().replace("-", " - ")) == user_code


@given(st.binary(min_size=6, max_size=6), st.sampled_from([":", "-"]), st.booleans())
def test_a_mac_address_with_one_kind_of_separator_is_accepted(
    raw: bytes, separator: str, upper: bool
) -> None:
    mac = separator.join(f"{byte:02x}" for byte in raw)
    assert device_info(mac=mac.upper() if upper else mac).mac_address.lower() == mac


@given(st.binary(min_size=6, max_size=6), st.integers(min_value=0, max_value=3))
def test_mixed_separators_are_refused(raw: bytes, position: int) -> None:
    parts = [f"{byte:02x}" for byte in raw]
    separators = [":"] * 5
    separators[position] = "-"
    mac = parts[0] + "".join(sep + part for sep, part in zip(separators, parts[1:], strict=True))
    assert not re.match(MAC_PATTERN, mac)


@given(st.ip_addresses())
def test_every_ip_address_is_accepted(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> None:
    assert device_info(ip=str(address)).ip_address == str(address)


@given(st.text(max_size=45))
def test_text_that_is_no_ip_address_is_refused(text: str) -> None:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        try:
            device_info(ip=text)
        except msgspec.ValidationError:
            return
        raise AssertionError(f"{text!r} was taken for an IP address") from None


@given(st.text(max_size=120))
def test_a_serial_is_what_a_path_can_carry(text: str) -> None:
    if re.match(SERIAL_PATTERN, text):
        assert "/" not in text and "\x00" not in text and "\n" not in text and 1 <= len(text) <= 100


@given(
    size=st.integers(min_value=0, max_value=10_000),
    first=st.one_of(st.none(), st.integers(min_value=0, max_value=12_000)),
    last=st.one_of(st.none(), st.integers(min_value=0, max_value=12_000)),
)
def test_a_byte_range_is_within_the_file_or_refused(size: int, first: int | None, last: int | None) -> None:
    header = f"bytes={'' if first is None else first}-{'' if last is None else last}"
    request = SimpleNamespace(headers={"Range": header})
    wanted = _range(request, size, '"etag"')  # type: ignore[arg-type]  # only .headers is read
    if first is None and last is None:
        assert wanted is None  # "bytes=-" is no range: the whole file
    elif wanted == "unsatisfiable":
        assert (
            size == 0
            or (first is not None and first >= size)
            or last == 0
            or (first is not None and last is not None and last < first)
        )
    else:
        assert isinstance(wanted, tuple)
        start, end = wanted
        assert 0 <= start <= end < size
        if first is None:  # the last N bytes
            assert last is not None  # "bytes=-" is the whole file, above
            assert end == size - 1 and end - start + 1 == min(last, size)
        else:
            assert start == first and end == min(size - 1, last if last is not None else size - 1)
