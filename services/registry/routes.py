"""Registry's operations: the routes it serves and its OpenAPI document, from one list."""

from services.registry import (
    access_routes,
    audit,
    command_routes,
    files,
    playlists,
    screen_config,
    screens,
    venues,
    webhook_routes,
)
from services.registry.models import (
    AdminAuditPage,
    ConfigPatch,
    DeviceFile,
    DeviceFileList,
    NewPlaylist,
    NewScreen,
    NewVenue,
    Playlist,
    Screen,
    ScreenPage,
    ScreenPatch,
    Venue,
    VenuePage,
    VenuePatch,
)
from shared.events import ScreenConfig
from shared.openapi import LIMIT, PAGE, Operation, Param

_ADMIN_ERRORS = (400, 401, 404)

OPERATIONS = [
    *access_routes.OPERATIONS,
    Operation(
        "POST",
        "/v1/venues",
        venues.create_venue,
        "Create a venue",
        "admin",
        NewVenue,
        responses={201: Venue},
        errors=(400, 401, 413, 415),
        tag="Venues and screens",
        scope="screens:write",
        description=(
            "`timezone` is an IANA name; `openingHours` null (always open) or periods in the venue's time"
            " zone; `offlineAlertAfterMinutes` 0-2880, null for the deployment's setting."
        ),
    ),
    Operation(
        "GET",
        "/v1/venues",
        venues.list_venues,
        "List venues",
        "admin",
        responses={200: VenuePage},
        errors=(400, 401),
        params=PAGE,
        tag="Venues and screens",
        scope="screens:read",
        description=(
            "The tenant's venues, oldest first, a page at a time: pass the answer's `nextCursor` as "
            "`cursor` for the next."
        ),
    ),
    Operation(
        "GET",
        "/v1/venues/{id}",
        venues.get_venue,
        "Get a venue",
        "admin",
        responses={200: Venue},
        errors=(401, 404),
        tag="Venues and screens",
        scope="screens:read",
        description="One of the tenant's venues; another tenant's is 404.",
    ),
    Operation(
        "PATCH",
        "/v1/venues/{id}",
        venues.update_venue,
        "Change a venue: name, timezone, address, openingHours, offlineAlertAfterMinutes (null clears)",
        "admin",
        VenuePatch,
        responses={200: Venue},
        errors=(*_ADMIN_ERRORS, 413, 415),
        tag="Venues and screens",
        scope="screens:write",
        description=(
            "Only the fields sent change; null clears one (not `name`). Recorded in the admin audit trail"
            " as `venue.changed`."
        ),
    ),
    Operation(
        "POST",
        "/v1/screens",
        screens.create_screen,
        "Create a screen (state provisioning)",
        "admin",
        NewScreen,
        responses={201: Screen},
        errors=(400, 401, 404, 413, 415),
        tag="Venues and screens",
        scope="screens:write",
        description=(
            "The screen starts in state `provisioning`, without a device, presence `unknown`, until a TV "
            "pairs with it."
        ),
    ),
    Operation(
        "GET",
        "/v1/screens",
        screens.list_screens,
        "List screens",
        "admin",
        responses={200: ScreenPage},
        errors=(400, 401),
        params=(
            Param("venueId", {"type": "string", "format": "uuid"}),
            Param("state", {"enum": ["provisioning", "active"]}),
            *PAGE,
        ),
        tag="Venues and screens",
        scope="screens:read",
        description=(
            "The tenant's screens, oldest first, optionally of one venue or in one state, a page at a time."
        ),
    ),
    Operation(
        "GET",
        "/v1/screens/{id}",
        screens.get_screen,
        "Get a screen",
        "admin",
        responses={200: Screen},
        errors=(401, 404),
        tag="Venues and screens",
        scope="screens:read",
        description=(
            "Its `state` (provisioning, active) and `presence` (unknown, online, offline) follow the bus "
            "a moment after the change."
        ),
    ),
    Operation(
        "PATCH",
        "/v1/screens/{id}",
        screens.update_screen,
        "Change a screen: name, offlineAlertAfterMinutes (null: the venue's)",
        "admin",
        ScreenPatch,
        responses={200: Screen},
        errors=(*_ADMIN_ERRORS, 413, 415),
        tag="Venues and screens",
        scope="screens:write",
        description=(
            "Only the fields sent change; `offlineAlertAfterMinutes: null` falls back to the venue's "
            "delay. Recorded in the admin audit trail as `screen.changed`."
        ),
    ),
    Operation(
        "GET",
        "/v1/screens/{id}/playlist",
        playlists.get_playlist,
        "Get a screen's playlist",
        "admin",
        responses={200: Playlist},
        errors=(401, 404),
        tag="Venues and screens",
        scope="screens:read",
        description="The playlist the screen's TV plays, with its version.",
    ),
    Operation(
        "PUT",
        "/v1/screens/{id}/playlist",
        playlists.replace_playlist,
        "Replace a screen's playlist",
        "admin",
        NewPlaylist,
        responses={200: Playlist},
        errors=(*_ADMIN_ERRORS, 413, 415),
        tag="Venues and screens",
        scope="screens:write",
        description=(
            "The items replace the whole playlist (at most 1000) and its version grows; the TV's waiting "
            "poll gets it at once."
        ),
    ),
    Operation(
        "GET",
        "/v1/screens/{id}/config",
        screen_config.get_config,
        "Get a screen's config",
        "admin",
        responses={200: ScreenConfig},
        errors=(401, 404),
        tag="Venues and screens",
        scope="screens:read",
        description="Sync and heartbeat intervals and the cache policy the screen's TV runs with.",
    ),
    Operation(
        "PATCH",
        "/v1/screens/{id}/config",
        screen_config.update_config,
        "Change a screen's config",
        "admin",
        ConfigPatch,
        responses={200: ScreenConfig},
        errors=(*_ADMIN_ERRORS, 413, 415),
        tag="Venues and screens",
        scope="screens:write",
        description=(
            "Only the fields sent change; the answer is the whole config, which the TV's waiting poll "
            "gets at once."
        ),
    ),
    *command_routes.OPERATIONS,
    # Files devices download by name (firmware, media)
    Operation(
        "PUT",
        "/v1/content/{name}",
        files.put_file,
        "Store a file for devices under a name (the body, as sent; ?screenId= repeatable limits it "
        "to those screens)",
        "admin",
        {"type": "string", "format": "binary"},
        "application/octet-stream",
        responses={200: DeviceFile},
        errors=(400, 401, 404, 413, 503),
        params=(Param("screenId", {"type": "string", "format": "uuid"}, "repeatable"),),
        tag="Files for devices",
        scope="screens:write",
        needs=("nats",),
    ),
    Operation(
        "GET",
        "/v1/content",
        files.list_files,
        "The tenant's files for devices",
        "admin",
        responses={200: DeviceFileList},
        errors=(401, 503),
        tag="Files for devices",
        scope="screens:read",
        needs=("nats",),
        description=(
            "Every file of the tenant with its size, ETag, content type and the screens it is limited to."
        ),
    ),
    Operation(
        "DELETE",
        "/v1/content/{name}",
        files.delete_file,
        "Delete a file",
        "admin",
        responses={204: None},
        errors=(400, 401, 404, 503),
        tag="Files for devices",
        scope="screens:write",
        needs=("nats",),
        description="The file is gone for every device at once.",
    ),
    Operation(
        "GET",
        "/v1/audit",
        audit.list_audit,
        "The tenant's admin changes, newest first: who, what, when, from where",
        "admin",
        responses={200: AdminAuditPage},
        errors=(400, 401),
        params=(LIMIT, Param("before", {"type": "integer"}, "nextBefore of the previous page")),
        tag="Audit",
        scope="audit:read",
        description=(
            "Every admin change of the tenant (venues, screens, playlists, config, clients, files, "
            "commands, webhooks), newest first; pass `nextBefore` as `before` for the next page."
        ),
    ),
    *webhook_routes.OPERATIONS,
]
