"""Registry's operations: the routes it serves and its OpenAPI document, from one list."""

from services.registry import clients, files
from services.registry import handlers as h
from services.registry.models import (
    DeviceFile,
    DeviceFileList,
    ApiClient,
    ClientList,
    ClientMetadata,
    ClientRegistered,
    InitialAccessToken,
    NewInitialAccessToken,
    AuthorizationServerMetadata,
    NewPlaylist,
    NewScreen,
    NewTenant,
    NewVenue,
    Playlist,
    Screen,
    ScreenPage,
    TenantCreated,
    TokenResponse,
    Venue,
    VenuePage,
    ConfigPatch,
)
from shared.events import ScreenConfig
from shared.openapi import Operation, Param

_PAGE = (
    Param("limit", {"type": "integer", "minimum": 1, "maximum": 200, "default": 50}),
    Param("cursor", {"type": "string"}, "nextCursor of the previous page"),
)
_TOKEN_FORM = {
    "type": "object",
    "required": ["grant_type"],
    "properties": {
        "grant_type": {"enum": ["client_credentials", "urn:ietf:params:oauth:grant-type:device_code"]},
        "client_id": {"type": "string"},
        "client_secret": {"type": "string", "description": "client_credentials only"},
        "scope": {"const": "admin"},
        "device_code": {"type": "string", "description": "device_code grant (RFC 8628 §3.4)"},
    },
}
_ADMIN_ERRORS = (400, 401, 404)

OPERATIONS = [
    Operation("POST", "/v1/tenants", h.create_tenant, "Create a tenant and its first API client",
              "operator", NewTenant, responses={201: TenantCreated}, errors=(400, 401, 413, 415),
              tag="Operator, tenants and access tokens"),
    Operation("GET", "/.well-known/oauth-authorization-server", h.authorization_server_metadata,
              "OAuth authorization server metadata (RFC 8414)", "none",
              responses={200: AuthorizationServerMetadata}, tag="Operator, tenants and access tokens"),
    Operation("POST", "/oauth/token", h.issue_token,
              "Client credentials grant (RFC 6749 §4.4); device-code grant of device-first pairing "
              "(RFC 8628 §3.4: the access token is the device key, with deviceId, screenId, tenantId, config)",
              "client", _TOKEN_FORM, "application/x-www-form-urlencoded",
              responses={200: TokenResponse}, errors=(400, 401), tag="Operator, tenants and access tokens"),
    Operation("POST", "/v1/venues", h.create_venue, "Create a venue", "admin", NewVenue,
              responses={201: Venue}, errors=(400, 401, 413, 415), tag="Venues and screens"),
    Operation("GET", "/v1/venues", h.list_venues, "List venues", "admin",
              responses={200: VenuePage}, errors=(400, 401), params=_PAGE, tag="Venues and screens"),
    Operation("GET", "/v1/venues/{id}", h.get_venue, "Get a venue", "admin",
              responses={200: Venue}, errors=(401, 404), tag="Venues and screens"),
    Operation("POST", "/v1/screens", h.create_screen, "Create a screen (state provisioning)", "admin",
              NewScreen, responses={201: Screen}, errors=(400, 401, 404, 413, 415), tag="Venues and screens"),
    Operation("GET", "/v1/screens", h.list_screens, "List screens", "admin",
              responses={200: ScreenPage}, errors=(400, 401),
              params=(Param("venueId", {"type": "string", "format": "uuid"}),
                      Param("state", {"enum": ["provisioning", "active"]}), *_PAGE), tag="Venues and screens"),
    Operation("GET", "/v1/screens/{id}", h.get_screen, "Get a screen", "admin",
              responses={200: Screen}, errors=(401, 404), tag="Venues and screens"),
    Operation("GET", "/v1/screens/{id}/playlist", h.get_playlist, "Get a screen's playlist", "admin",
              responses={200: Playlist}, errors=(401, 404), tag="Venues and screens"),
    Operation("PUT", "/v1/screens/{id}/playlist", h.replace_playlist, "Replace a screen's playlist",
              "admin", NewPlaylist, responses={200: Playlist}, errors=_ADMIN_ERRORS + (413, 415),
              tag="Venues and screens"),
    Operation("GET", "/v1/screens/{id}/config", h.get_config, "Get a screen's config", "admin",
              responses={200: ScreenConfig}, errors=(401, 404), tag="Venues and screens"),
    Operation("PATCH", "/v1/screens/{id}/config", h.update_config, "Change a screen's config", "admin",
              ConfigPatch, responses={200: ScreenConfig}, errors=_ADMIN_ERRORS + (413, 415),
              tag="Venues and screens"),
    # API clients (seed 004: dynamic client registration, RFC 7591)
    Operation("POST", "/v1/clients/initial-access-tokens", clients.issue_initial_access_token,
              "An initial access token for one client registration (shown once)", "admin",
              NewInitialAccessToken, responses={201: InitialAccessToken}, errors=(400, 401, 413, 415),
              tag="API clients"),
    Operation("POST", "/oauth/register", clients.register_client,
              "An integration registers itself as an API client (RFC 7591; Bearer <initial access token>)",
              "none", ClientMetadata, responses={201: ClientRegistered}, errors=(400, 401), tag="API clients"),
    Operation("GET", "/v1/clients", clients.list_clients, "The tenant's API clients (never their secrets)",
              "admin", responses={200: ClientList}, errors=(401,), tag="API clients"),
    Operation("POST", "/v1/clients/{clientId}/revoke", clients.revoke_client,
              "Revoke an API client: it gets no new access token", "admin",
              responses={200: ApiClient}, errors=(401, 404, 409), tag="API clients"),
    # Files devices download by name (seed 002)
    Operation("PUT", "/v1/content/{name}", files.put_file,
              "Store a file for devices under a name (the body, as sent; ?screenId= repeatable limits it "
              "to those screens)", "admin", {"type": "string", "format": "binary"}, "application/octet-stream",
              responses={200: DeviceFile}, errors=(400, 401, 404, 413),
              params=(Param("screenId", {"type": "string", "format": "uuid"}, "repeatable"),),
              tag="Files for devices"),
    Operation("GET", "/v1/content", files.list_files, "The tenant's files for devices", "admin",
              responses={200: DeviceFileList}, errors=(401,), tag="Files for devices"),
    Operation("DELETE", "/v1/content/{name}", files.delete_file, "Delete a file", "admin",
              responses={204: None}, errors=(400, 401, 404), tag="Files for devices"),
]
