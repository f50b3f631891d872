"""All of registry's SQL, one module for each thing it is about (a feature's, mostly: the token
endpoint and tenant creation use the clients' SQL too). Functions take a connection (the caller
owns the transaction) and return Structs or plain values, never database records; ``rows`` is
what they all make of PostgreSQL's answers."""

from services.registry.queries import (
    alerts,
    audit,
    clients,
    commands,
    playlists,
    screen_config,
    screen_content,
    screens,
    tenants,
    venues,
    webhook_deliveries,
    webhooks,
)

__all__ = [
    "alerts",
    "audit",
    "clients",
    "commands",
    "playlists",
    "screen_config",
    "screen_content",
    "screens",
    "tenants",
    "venues",
    "webhook_deliveries",
    "webhooks",
]
