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
        description=(
            "`type` is one of reload, reboot, screenshot, clear_cache, identify (`args.seconds`), "
            "display_power (`args.on`); `ttlSeconds` 1 s to 7 days, 1 hour by default. The TV gets it on "
            "its next commands poll."
        ),
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
        description=(
            "Every command sent to the screen, optionally of one status (pending, delivered, succeeded, "
            "failed, expired, cancelled), a page at a time."
        ),
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
        description="Its status and, once the TV reported, its message and data.",
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
        description="An open command (pending or delivered) becomes `cancelled`; the TV no longer sees it.",
    ),
    Operation(
        "GET",
        "/v1/screens/{id}/commands/{commandId}/screenshot",
        commands.get_screenshot,
        "The screenshot the TV took on the command (image/png or image/jpeg)",
        "admin",
        responses={200: ("image/png", "image/jpeg")},
        errors=(401, 404, 503),
        tag="Remote commands",
        scope="devices:read",
        needs=("nats",),
    ),
]
