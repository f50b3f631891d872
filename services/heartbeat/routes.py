"""The heartbeat service's operations: the routes it serves and its OpenAPI document, from one list."""

from shared.openapi import Operation

OPERATIONS: list[Operation] = []
