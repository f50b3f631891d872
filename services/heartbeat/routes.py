"""The heartbeat service's operations: the routes it serves and its OpenAPI document, from one list."""

from services.heartbeat import handlers as h
from services.heartbeat.queries import FleetStatus, ScreenPresence
from shared.openapi import Operation

OPERATIONS = [
    Operation("GET", "/v1/fleet/status", h.get_fleet_status,
              "How many of the tenant's screens are online, offline and not heard from yet", "admin",
              responses={200: FleetStatus}, errors=(401,)),
    Operation("GET", "/v1/screens/{id}/presence", h.get_screen_presence,
              "A screen's presence, when it was last seen and its last heartbeat", "admin",
              responses={200: ScreenPresence}, errors=(401, 404)),
]
