"""Provisioning's operations: the routes it serves and its OpenAPI document, from one list."""

from services.provisioning import handlers as h
from services.provisioning import claims, device_authorization, recovery, serials, tokens
from services.provisioning.models import (
    Activation,
    Approval,
    AuditTrail,
    Claim,
    ClaimMode,
    ClaimModeRequest,
    FactoryDevices,
    NewFactoryDevices,
    DeviceAuthorization,
    DeviceAuthorizationStarted,
    CodeCreated,
    CodeStatus,
    Device,
    DevicePage,
    NewCode,
    Enablement,
    NewProvisioningToken,
    Serial,
    SerialPage,
    SerialsUploaded,
    SerialUpload,
    ProvisioningTokenCreated,
    Recovery,
    Registered,
    Registration,
    Revocation,
    Revoked,
    TokenProvisioning,
)
from shared.openapi import Operation, Param

_DEVICE_INFO_FIELDS = {
    name: {"type": "string"}
    for name in ("manufacturer", "model", "osVersion", "appVersion", "macAddress", "ipAddress",
                 "deviceName", "locationHint", "hardwareId")
}
_DEVICE_AUTHORIZATION_FORM = {
    "type": "object",
    "description": "client_id, and the TV's deviceInfo fields (as in /devices/register) as parameters",
    "required": ["client_id", "manufacturer", "model", "osVersion", "appVersion", "macAddress", "ipAddress"],
    "properties": {"client_id": {"type": "string"}, "scope": {"type": "string"}, **_DEVICE_INFO_FIELDS},
}
_USER_CODE = "/v1/devices/device-authorizations/{userCode}"

OPERATIONS = [
    Operation("POST", "/v1/devices/provisioning-codes", h.create_code,
              "Generate a pairing code for a screen in provisioning (supersedes its pending code)",
              "admin", NewCode, responses={201: CodeCreated}, errors=(400, 401, 404, 409, 413, 415)),
    Operation("GET", "/v1/devices/provisioning-codes/{code}/status", h.get_code_status,
              "Status of a pairing code", "admin", responses={200: CodeStatus}, errors=(400, 401, 404)),
    Operation("POST", "/devices/register", h.register_device,
              "A TV registers with a pairing code and receives its device key (shown once)", "none",
              Registration, responses={201: Registered},
              errors=(400, 404, 409, 410, 413, 415, 429)),
    Operation("GET", "/v1/devices", h.list_devices, "List devices", "admin",
              responses={200: DevicePage}, errors=(400, 401),
              params=(Param("screenId", {"type": "string", "format": "uuid"}),
                      Param("status", {"enum": ["active", "suspended"]}),
                      Param("limit", {"type": "integer", "minimum": 1, "maximum": 200, "default": 50}),
                      Param("cursor", {"type": "string"}))),
    # Serial numbers registered ahead (seed 002); before /v1/devices/{id}, which would match them
    Operation("POST", "/v1/devices/serials", serials.upload_serials,
              "Register serial numbers, each for a screen (JSON, or text/csv lines serial,screenId); "
              "idempotent", "admin", SerialUpload, responses={200: SerialsUploaded},
              errors=(400, 401, 404, 409, 413, 415)),
    Operation("GET", "/v1/devices/serials", serials.list_serials, "List the tenant's serials", "admin",
              responses={200: SerialPage}, errors=(400, 401),
              params=(Param("status", {"enum": ["registered", "enabled", "expired", "activated"]}),
                      Param("limit", {"type": "integer", "minimum": 1, "maximum": 200, "default": 50}),
                      Param("cursor", {"type": "string"}))),
    Operation("POST", "/v1/devices/serials/{serial}/enable", serials.enable_serial,
              "Open (or reopen) a serial's activation window", "admin", Enablement,
              responses={200: Serial}, errors=(400, 401, 404, 409, 413, 415)),
    Operation("POST", "/devices/activate", serials.activate_device,
              "A device activates with its enabled serial and receives its device key (shown once); "
              "a second activation is refused and raises an alert", "none", Activation,
              responses={201: Registered}, errors=(400, 404, 409, 410, 413, 415, 429)),
    Operation("GET", "/v1/devices/{id}", h.get_device, "Get a device (never its key)", "admin",
              responses={200: Device}, errors=(401, 404)),
    Operation("POST", "/v1/devices/{id}/revoke", h.revoke_device,
              "Suspend a device and revoke its keys; its screen returns to provisioning", "admin",
              Revocation, responses={200: Revoked}, errors=(400, 401, 404, 409, 413, 415)),
    Operation("GET", "/v1/devices/{id}/audit", h.device_audit,
              "Every bind, unbind and recovery of a device: who, how, when and from where", "admin",
              responses={200: AuditTrail}, errors=(401, 404)),
    Operation("POST", "/v1/device/logout", h.logout_device,
              "The TV signs itself out: its key dies and the screen returns to provisioning", "device",
              responses={200: Revoked}, errors=(401,)),
    # Factory-reset recovery (seed 001, with a proof)
    Operation("POST", "/devices/recover", recovery.recover_device,
              "A TV that reported a hardwareId trades it and its recovery secret for a fresh key", "none",
              Recovery, responses={200: Registered}, errors=(400, 401, 413, 415, 429)),
    # On-demand provisioning tokens (seed 003)
    Operation("POST", "/v1/devices/provisioning-tokens", tokens.create_token,
              "A single-use, short-lived token that provisions a device onto a screen (shown once)", "admin",
              NewProvisioningToken, responses={201: ProvisioningTokenCreated},
              errors=(400, 401, 404, 409, 413, 415)),
    Operation("POST", "/devices/provision", tokens.provision_device,
              "A device trades a provisioning token for its device key (shown once)", "none",
              TokenProvisioning, responses={201: Registered}, errors=(400, 404, 409, 410, 413, 415, 429)),
    # Device-first pairing (seed 004, RFC 8628); the device-code grant is at /oauth/token (registry)
    Operation("POST", "/oauth/device_authorization", device_authorization.start,
              "The TV starts device-first pairing: a device code to poll with, a user code to show "
              "(RFC 8628 §3.1)", "none", _DEVICE_AUTHORIZATION_FORM, "application/x-www-form-urlencoded",
              responses={200: DeviceAuthorizationStarted}, errors=(400, 401)),
    Operation("GET", _USER_CODE, device_authorization.show,
              "What the TV showing this user code reported, and from where", "admin",
              responses={200: DeviceAuthorization}, errors=(400, 401, 404)),
    Operation("POST", _USER_CODE + "/approve", device_authorization.approve,
              "Approve the TV for a screen in provisioning; its next poll gets its device key", "admin",
              Approval, responses={200: DeviceAuthorization}, errors=(400, 401, 404, 409, 410, 413, 415, 429)),
    Operation("POST", _USER_CODE + "/deny", device_authorization.deny,
              "Deny the TV; its next poll gets access_denied", "admin",
              responses={200: DeviceAuthorization}, errors=(400, 401, 404, 409, 410, 429)),
    # Pre-provisioned devices and claim mode (seed 003)
    Operation("POST", "/v1/devices/pre-provisioned", claims.create_factory_devices,
              "Operator: ids and keys for devices to flash at the factory (shown once)", "operator",
              NewFactoryDevices, responses={201: FactoryDevices}, errors=(400, 401, 413, 415)),
    Operation("POST", "/v1/device/claim-mode", claims.open_claim_mode,
              "A pre-provisioned device makes itself claimable for a while and gets the code to show "
              "(another device's id: 403 with reason MATCHING_DEVICE_ONLY)", "device",
              ClaimModeRequest, responses={200: ClaimMode}, errors=(400, 401, 403, 409, 413, 415)),
    Operation("POST", "/v1/devices/claims", claims.claim_device,
              "Claim a device in claim mode onto a screen in provisioning, with the code it shows", "admin",
              Claim, responses={201: Device}, errors=(400, 401, 404, 409, 413, 415, 429)),
]
