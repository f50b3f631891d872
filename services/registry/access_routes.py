"""Registry's operations on tenants and access: the operator's tenants, API clients (dynamic
registration, RFC 7591), the token endpoint and what a client discovers it by (RFC 8414 metadata,
the JWK Set). Part of ``routes.OPERATIONS``, in a module of their own so neither list outgrows a
read."""

from services.registry import clients, oauth, tenants
from services.registry.models import (
    ApiClient,
    AuthorizationServerMetadata,
    ClientCredentials,
    ClientList,
    ClientMetadata,
    ClientRegistered,
    InitialAccessToken,
    NewInitialAccessToken,
    NewTenant,
    TenantCreated,
    TenantPage,
    TokenResponse,
)
from shared.auth import JwkSet
from shared.openapi import PAGE, Operation
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
]
