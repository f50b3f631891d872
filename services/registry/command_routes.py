"""Registry's remote-command operations (part of ``routes.OPERATIONS``; a module of their own,
so that neither list outgrows a read)."""

from services.registry import commands
from services.registry.command_models import COMMAND_STATUSES, Command, CommandPage, NewCommand
from shared.openapi import PAGE, Operation, Param

_ADMIN_ERRORS = (400, 401, 404)

OPERATIONS = [
    Operation(
        "POST",
        "/v1/screens/{id}/commands",
        commands.create_command,
        "Send the screen's TV a command; 409 when the screen has 20 open commands already",
        "admin",
        NewCommand,
        responses={202: Command},
        errors=(*_ADMIN_ERRORS, 409, 413, 415),
        tag="Remote commands",
        scope="devices:write",
    ),
    Operation(
        "GET",
        "/v1/screens/{id}/commands",
        commands.list_commands,
        "The screen's commands, oldest first",
        "admin",
        responses={200: CommandPage},
        errors=_ADMIN_ERRORS,
        params=(Param("status", {"enum": list(COMMAND_STATUSES)}), *PAGE),
        tag="Remote commands",
        scope="devices:read",
    ),
    Operation(
        "GET",
        "/v1/screens/{id}/commands/{commandId}",
        commands.get_command,
        "Get a command",
        "admin",
        responses={200: Command},
        errors=(401, 404),
        tag="Remote commands",
        scope="devices:read",
    ),
    Operation(
        "POST",
        "/v1/screens/{id}/commands/{commandId}/cancel",
        commands.cancel_command,
        "Cancel a pending or delivered command (409 for one closed already)",
        "admin",
        responses={200: Command},
        errors=(401, 404, 409),
        tag="Remote commands",
        scope="devices:write",
    ),
    Operation(
        "GET",
        "/v1/screens/{id}/commands/{commandId}/screenshot",
        commands.get_screenshot,
        "The screenshot the TV took on the command (image/png or image/jpeg)",
        "admin",
        responses={200: None},
        errors=(401, 404, 503),
        tag="Remote commands",
        scope="devices:read",
        needs=("nats",),
    ),
]
