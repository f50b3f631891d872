"""How the outbox relay groups a batch into publish waves (no server): rows of a wave go out at once,
waves one after another, and no KV key appears twice in a wave — so a retry can never put an older
value of a key after a newer one."""

from __future__ import annotations

from collections import Counter
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from shared.outbox import _waves
from shared.projections import kv_subject

SCREEN_A = kv_subject("screen-content", "a")
SCREEN_B = kv_subject("screen-content", "b")
KEY_A = kv_subject("device-keys", "a")
BOUND = "provisioning.device.bound"


def rows(*subjects: str) -> list[Any]:
    """Outbox rows as the relay reads them (it only looks at ``seq`` and ``subject`` here)."""
    return [{"seq": seq, "subject": subject} for seq, subject in enumerate(subjects, start=1)]


def seqs(waves: list[list[Any]]) -> list[list[int]]:
    return [[row["seq"] for row in wave] for wave in waves]


def test_an_empty_batch_has_no_wave() -> None:
    assert _waves([]) == []


def test_events_go_out_in_one_wave_even_on_the_same_subject() -> None:
    # Their readers order events by the version they carry, so concurrency costs them nothing.
    assert seqs(_waves(rows(BOUND, BOUND, "registry.screen.created", BOUND))) == [[1, 2, 3, 4]]


def test_each_put_of_the_same_kv_key_waits_for_the_one_before() -> None:
    assert seqs(_waves(rows(SCREEN_A, SCREEN_A, SCREEN_A))) == [[1], [2], [3]]


def test_different_keys_share_a_wave_and_the_same_key_in_two_buckets_is_two_keys() -> None:
    assert seqs(_waves(rows(SCREEN_A, SCREEN_B, KEY_A))) == [[1, 2, 3]]


def test_a_mixed_batch_keeps_commit_order_within_each_wave() -> None:
    batch = rows(SCREEN_A, BOUND, SCREEN_B, SCREEN_A, BOUND, SCREEN_B, SCREEN_A)
    assert seqs(_waves(batch)) == [[1, 2, 3, 5], [4, 6], [7]]


def test_only_the_kv_prefix_with_its_dot_counts_as_a_kv_put() -> None:
    # "$KVX." is not a KV subject: two such rows may go out together.
    assert seqs(_waves(rows("$KVX.screen-content.a", "$KVX.screen-content.a"))) == [[1, 2]]


SUBJECTS = st.sampled_from([SCREEN_A, SCREEN_B, KEY_A, BOUND, "registry.screen.created"])


@settings(max_examples=300)
@given(st.lists(SUBJECTS, max_size=40))
def test_waves_hold_every_row_once_and_order_each_keys_puts(subjects: list[str]) -> None:
    batch = rows(*subjects)
    waves = _waves(batch)
    assert sorted(row["seq"] for wave in waves for row in wave) == [row["seq"] for row in batch]
    assert all(wave for wave in waves), "no empty wave"
    for wave in waves:
        assert [row["seq"] for row in wave] == sorted(row["seq"] for row in wave)
        kv = Counter(row["subject"] for row in wave if row["subject"].startswith("$KV."))
        assert all(count == 1 for count in kv.values()), kv
    # The n-th put of a key is in wave n: as many waves as the most-written key needs, no more.
    for subject in {s for s in subjects if s.startswith("$KV.")}:
        levels = [n for n, wave in enumerate(waves) for row in wave if row["subject"] == subject]
        assert levels == list(range(subjects.count(subject))), (subject, levels)
    puts = Counter(s for s in subjects if s.startswith("$KV."))
    assert len(waves) == max([*puts.values(), 1 if subjects else 0])
