"""Conditional polls without a server: which If-None-Match answers 304 (RFC 9110 §13.1.2, weak
comparison over a list or ``*``), and the strong validator of a device file."""

from __future__ import annotations

import base64
import hashlib

import pytest

from services.device_gateway.devices import etag_matches
from shared.projections import device_file_etag

ETAG = '"3f2a9c0b1d"'


@pytest.mark.parametrize(
    "if_none_match",
    [
        ETAG,
        f"W/{ETAG}",  # a weak validator matches: If-None-Match compares weakly
        f'"aaaa", {ETAG}',
        f'"aaaa",{ETAG}',
        f'"aaaa" ,  W/{ETAG} , "bbbb"',
        "*",
        " *",
        '"aaaa", *',
    ],
)
def test_a_matching_if_none_match_is_a_304(if_none_match: str) -> None:
    assert etag_matches(if_none_match, ETAG) is True


@pytest.mark.parametrize(
    "if_none_match",
    [
        "",
        ",",
        '"aaaa"',
        '"aaaa", "bbbb"',
        "3f2a9c0b1d",  # the tag without its quotes is another tag
        '"3F2A9C0B1D"',  # entity tags are case-sensitive
        f"w/{ETAG}",  # so is the weak marker
        '"3f2a9c0b1"',  # a prefix
        '"3f2a9c0b1d0"',  # an extension
        f"{ETAG}x",
        "**",
        '"*"',
    ],
)
def test_anything_else_is_a_full_answer(if_none_match: str) -> None:
    assert etag_matches(if_none_match, ETAG) is False


def object_store_digest(content: bytes) -> str:
    """The digest the NATS object store keeps with an object: ``SHA-256=`` and URL-safe base64."""
    return "SHA-256=" + base64.urlsafe_b64encode(hashlib.sha256(content).digest()).decode()


def test_a_device_file_etag_is_the_quoted_content_digest() -> None:
    digest = object_store_digest(b"welcome.png bytes")
    etag = device_file_etag(digest)
    assert etag == '"' + digest.removeprefix("SHA-256=") + '"'
    assert len(etag) == 46 and etag.endswith('="')  # 32 bytes: 44 base64 characters with padding
    assert etag_matches(etag, etag) and etag_matches(f"W/{etag}", etag)
    assert etag != device_file_etag(object_store_digest(b"welcome.png bytes, changed"))


def test_a_device_file_etag_whose_digest_starts_like_a_weak_marker_still_matches_only_itself() -> None:
    etag = device_file_etag("SHA-256=W/AAAA")
    assert etag == '"W/AAAA"'
    assert etag_matches(etag, etag) and etag_matches(f"W/{etag}", etag)
    assert not etag_matches('"AAAA"', etag)


def test_a_device_file_without_a_digest_has_the_empty_etag() -> None:
    assert device_file_etag(None) == '""'
    assert device_file_etag("") == '""'
    assert not etag_matches(device_file_etag(object_store_digest(b"x")), '""')
