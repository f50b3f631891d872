"""The one way the services read the wall clock: aware UTC datetimes."""

from datetime import datetime, timezone


def utcnow() -> datetime:
    return datetime.now(timezone.utc)
