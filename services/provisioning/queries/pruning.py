"""What provisioning forgets, and when: rows that callers can multiply (budgets of windows that
ended, device authorizations, pairing codes and provisioning tokens that expired without binding a
device), and revoked keys past their retention. A row that bound a device stays: it tells which
code, token or request brought the device in; so do the device and its audit trail.

Each delete takes a bounded batch, so one round never holds many row locks or one long
transaction; the caller repeats while a batch comes back full."""

from __future__ import annotations

from shared.db import Connection


async def prune_budgets(conn: Connection, window_seconds: int, batch: int) -> int:
    """Budgets of windows that have ended."""
    return _count(
        await conn.execute(
            "DELETE FROM attempt_budgets WHERE (flow, who, window_start) IN ("
            " SELECT flow, who, window_start FROM attempt_budgets"
            " WHERE window_start < now() - make_interval(secs => $1) LIMIT $2)",
            window_seconds,
            batch,
        )
    )


# What expires unused, by table and key: device authorizations, pairing codes, provisioning tokens.
EXPIRING = {
    "device_authorizations": "device_code_hash",
    "provisioning_codes": "code",
    "provisioning_tokens": "token_hash",
}


async def prune_expired(conn: Connection, table: str, kept_seconds: int, batch: int) -> int:
    """Rows of an ``EXPIRING`` table expired ``kept_seconds`` ago that bound no device."""
    key = EXPIRING[table]  # names from this module only, never from input
    return _count(
        await conn.execute(
            f"DELETE FROM {table} WHERE {key} IN ("
            f" SELECT {key} FROM {table}"
            " WHERE device_id IS NULL AND expires_at < now() - make_interval(secs => $1) LIMIT $2)",
            kept_seconds,
            batch,
        )
    )


async def delete_revoked_keys(conn: Connection, kept_seconds: float, batch: int) -> list[bytes]:
    """Keys revoked ``kept_seconds`` ago, oldest first; returns their digests. Rows another
    replica's round holds are skipped, not waited for: each key goes once."""
    rows = await conn.fetch(
        "DELETE FROM device_keys WHERE key_hash IN ("
        " SELECT key_hash FROM device_keys WHERE revoked_at < now() - make_interval(secs => $1)"
        " ORDER BY revoked_at LIMIT $2 FOR UPDATE SKIP LOCKED) RETURNING key_hash",
        kept_seconds,
        batch,
    )
    return [row["key_hash"] for row in rows]


def _count(status: str) -> int:
    """Rows a ``DELETE n`` status names."""
    return int(status.rsplit(" ", 1)[1])
