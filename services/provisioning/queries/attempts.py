"""Failed attempts at something guessable, counted per caller and per fixed time window."""

from __future__ import annotations

from shared.db import Connection


async def failures_in_window(conn: Connection, who: str, window_seconds: int) -> tuple[int, int]:
    """Failures of ``who`` in the current window, and seconds until the window ends."""
    row = await conn.fetchrow(
        "SELECT coalesce((SELECT failures FROM registration_failures"
        "   WHERE client_address = $1 AND window_start = w.start), 0) AS failures,"
        " ceil(extract(epoch FROM w.start + make_interval(secs => $2) - now()))::int AS remaining"
        " FROM (SELECT to_timestamp(floor(extract(epoch FROM now()) / $2) * $2) AS start) w",
        who,
        window_seconds,
    )
    assert row is not None  # a query without a table: always one row
    return row["failures"], row["remaining"]


async def record_failure(conn: Connection, who: str, window_seconds: int) -> None:
    await conn.execute(
        "INSERT INTO registration_failures (client_address, window_start, failures)"
        " VALUES ($1, to_timestamp(floor(extract(epoch FROM now()) / $2) * $2), 1)"
        " ON CONFLICT (client_address, window_start)"
        " DO UPDATE SET failures = registration_failures.failures + 1",
        who,
        window_seconds,
    )


async def prune_failures(conn: Connection, older_than_seconds: int) -> None:
    await conn.execute(
        "DELETE FROM registration_failures WHERE window_start < now() - make_interval(secs => $1)",
        older_than_seconds,
    )
