"""All of provisioning's SQL, one module a feature. Functions take a connection (the caller owns
the transaction) and return Structs or plain values, never database records.

Lock order, everywhere: a device row, then its screen row, then the row a flow reached the screen
by (pairing code, provisioning token, serial, device authorization, factory device). Keeping one
order is what keeps concurrent registrations, new codes and revokes free of deadlocks.
"""

from services.provisioning.queries import (
    attempts,
    audit,
    binding,
    claims,
    codes,
    device_authorization,
    devices,
    pruning,
    recovery,
    screens,
    serials,
    tokens,
)

__all__ = [
    "attempts",
    "audit",
    "binding",
    "claims",
    "codes",
    "device_authorization",
    "devices",
    "pruning",
    "recovery",
    "screens",
    "serials",
    "tokens",
]
