"""Registry's operations: the routes it serves and its OpenAPI document, from one list."""

from services.registry import (
    audit,
    clients,
    command_routes,
    files,
    oauth,
    playlists,
    screen_config,
    screens,
    tenants,
    venues,
    webhook_routes,
)
from services.registry.models import (
    AdminAuditPage,
    ApiClient,
    AuthorizationServerMetadata,
    ClientCredentials,
    ClientList,
    ClientMetadata,
    ClientRegistered,
    ConfigPatch,
    DeviceFile,
    DeviceFileList,
    InitialAccessToken,
    NewInitialAccessToken,
    NewPlaylist,
    NewScreen,
    NewTenant,
    NewVenue,
    Playlist,
    Screen,
    ScreenPage,
    ScreenPatch,
    TenantCreated,
    TenantPage,
    TokenResponse,
    Venue,
    VenuePage,
    VenuePatch,
)
from shared.auth import JwkSet
from shared.events import ScreenConfig
from shared.openapi import LIMIT, PAGE, Operation, Param
from shared.routing import JWKS_PATH

_TOKEN_FORM = {
    "type": "object",
    "required": ["grant_type"],
    "properties": {
        "grant_type": {"enum": ["client_credentials", "urn:ietf:params:oauth:grant-type:device_code"]},
        "client_id": {"type": "string"},
        "client_secret": {"type": "string", "description": "client_credentials only"},
        "scope": {"type": "string", "description": "space-separated; within the client's scopes"},
        "device_code": {"type": "string", "description": "device_code grant (RFC 8628 §3.4)"},
    },
}
_ADMIN_ERRORS = (400, 401, 404)

OPERATIONS = [
    Operation(
        "POST",
        "/v1/tenants",
        tenants.create_tenant,
        "Create a tenant and its first API client",
        "operator",
        NewTenant,
        responses={201: TenantCreated},
        errors=(400, 401, 413, 415),
        tag="Operator, tenants and access tokens",
        description=(
            "The operator creates a tenant; the answer carries its first API client (scope `admin`), "
            "whose secret is shown only here."
        ),
    ),
    Operation(
        "GET",
        "/.well-known/oauth-authorization-server",
        oauth.authorization_server_metadata,
        "OAuth authorization server metadata (RFC 8414)",
        "none",
        responses={200: AuthorizationServerMetadata},
        tag="Operator, tenants and access tokens",
    ),
    Operation(
        "GET",
        JWKS_PATH,
        oauth.json_web_key_set,
        "The public keys that verify access tokens, current and previous (JWK Set, RFC 7517)",
        "none",
        responses={200: JwkSet},
        tag="Operator, tenants and access tokens",
    ),
    Operation(
        "POST",
        "/oauth/token",
        oauth.issue_token,
        "Client credentials grant (RFC 6749 §4.4); device-code grant of device-first pairing "
        "(RFC 8628 §3.4: the access token is the device key, with deviceId, screenId, tenantId, config)",
        "client",
        _TOKEN_FORM,
        "application/x-www-form-urlencoded",
        responses={200: TokenResponse},
        errors=(400, 401),
        tag="Operator, tenants and access tokens",
    ),
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
    # API clients (dynamic client registration, RFC 7591)
    Operation(
        "POST",
        "/v1/clients/initial-access-tokens",
        clients.issue_initial_access_token,
        "An initial access token for one client registration (shown once)",
        "admin",
        NewInitialAccessToken,
        responses={201: InitialAccessToken},
        errors=(400, 401, 413, 415),
        tag="API clients",
        scope="clients:write",
        description=(
            "Good for one registration at `POST /oauth/register` (60 s to 7 days, 1 hour by default); the"
            " client it registers may have at most this token's scopes."
        ),
    ),
    Operation(
        "POST",
        "/oauth/register",
        clients.register_client,
        "An integration registers itself as an API client (RFC 7591; Bearer <initial access token>)",
        "none",
        ClientMetadata,
        responses={201: ClientRegistered},
        errors=(400, 401),
        tag="API clients",
    ),
    Operation(
        "GET",
        "/v1/clients",
        clients.list_clients,
        "The tenant's API clients (never their secrets)",
        "admin",
        responses={200: ClientList},
        errors=(401,),
        tag="API clients",
        scope="clients:write",
        description=(
            "Every API client of the tenant with its scopes, who registered it and whether it is revoked;"
            " never a secret."
        ),
    ),
    Operation(
        "POST",
        "/v1/clients/{clientId}/revoke",
        clients.revoke_client,
        "Revoke an API client: it gets no new access token",
        "admin",
        responses={200: ApiClient},
        errors=(401, 404, 409),
        tag="API clients",
        scope="clients:write",
        description=(
            "Every service refuses the access tokens it holds within seconds, and the initial access "
            "tokens it issued that nobody used die with it. A client cannot revoke itself (409)."
        ),
    ),
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
    # The operator's own tools
    Operation(
        "GET",
        "/v1/tenants",
        tenants.list_tenants,
        "List tenants",
        "operator",
        responses={200: TenantPage},
        errors=(400, 401),
        params=PAGE,
        tag="Operator, tenants and access tokens",
        description="Every tenant, oldest first, a page at a time.",
    ),
    Operation(
        "POST",
        "/v1/tenants/{id}/clients",
        tenants.issue_client,
        "A new admin API client for a tenant, say one that lost its own (the secret shown once)",
        "operator",
        responses={201: ClientCredentials},
        errors=(401, 404),
        tag="Operator, tenants and access tokens",
    ),
    *webhook_routes.OPERATIONS,
]
