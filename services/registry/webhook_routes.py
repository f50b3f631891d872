"""Registry's webhook management operations (part of ``routes.OPERATIONS``; a module of their own,
so that neither list outgrows a read)."""

from services.registry import webhooks
from services.registry.webhook_models import (
    DELIVERY_STATES,
    NewWebhook,
    Webhook,
    WebhookDelivery,
    WebhookDeliveryDetail,
    WebhookDeliveryPage,
    WebhookPage,
    WebhookPatch,
    WebhookSecretRotated,
    WebhookWithSecret,
)
from shared.openapi import PAGE, Operation, Param

_TAG = "Webhooks"
_SCOPE = "clients:write"

OPERATIONS = [
    Operation(
        "POST",
        "/v1/webhooks",
        webhooks.create_webhook,
        "Register a webhook endpoint for some event types (its signing secret shown once); 409 past"
        " WEBHOOKS_PER_TENANT",
        "admin",
        NewWebhook,
        responses={201: WebhookWithSecret},
        errors=(400, 401, 409, 413, 415),
        tag=_TAG,
        scope=_SCOPE,
        description=(
            "The endpoint receives the event types it names, signed the Standard Webhooks way; `secret` "
            "is shown here and at a rotation only. `url` must be https (unless the deployment allows "
            "otherwise)."
        ),
    ),
    Operation(
        "GET",
        "/v1/webhooks",
        webhooks.list_webhooks,
        "The tenant's webhook endpoints, oldest first (never their secrets)",
        "admin",
        responses={200: WebhookPage},
        errors=(400, 401),
        params=PAGE,
        tag=_TAG,
        scope=_SCOPE,
        description="The tenant's endpoints, oldest first, a page at a time; never their secrets.",
    ),
    Operation(
        "GET",
        "/v1/webhooks/{id}",
        webhooks.get_webhook,
        "Get a webhook endpoint",
        "admin",
        responses={200: Webhook},
        errors=(401, 404),
        tag=_TAG,
        scope=_SCOPE,
        description="The endpoint, whether it is enabled and why not; never its secret.",
    ),
    Operation(
        "PATCH",
        "/v1/webhooks/{id}",
        webhooks.update_webhook,
        "Change a webhook endpoint's url, events, description or enabled (enabling clears disabledReason)",
        "admin",
        WebhookPatch,
        responses={200: Webhook},
        errors=(400, 401, 404, 413, 415),
        tag=_TAG,
        scope=_SCOPE,
        description=(
            "Only the fields sent change; `description: null` clears it; `enabled: true` clears "
            "`disabledReason`."
        ),
    ),
    Operation(
        "DELETE",
        "/v1/webhooks/{id}",
        webhooks.delete_webhook,
        "Delete a webhook endpoint and its delivery log",
        "admin",
        responses={204: None},
        errors=(401, 404),
        tag=_TAG,
        scope=_SCOPE,
        description="Its delivery log goes with it; nothing more is sent to it.",
    ),
    Operation(
        "POST",
        "/v1/webhooks/{id}/rotate-secret",
        webhooks.rotate_secret,
        "A new signing secret (shown once); the one it replaces signs alongside until"
        " previousSecretExpiresAt",
        "admin",
        responses={200: WebhookSecretRotated},
        errors=(401, 404),
        tag=_TAG,
        scope=_SCOPE,
        description=(
            "Until `previousSecretExpiresAt` the old secret signs every delivery too, so the receiver can"
            " switch without missing one."
        ),
    ),
    Operation(
        "POST",
        "/v1/webhooks/{id}/ping",
        webhooks.ping_webhook,
        "Queue a webhook.ping delivery to the endpoint, due now (409 while it is disabled)",
        "admin",
        responses={202: WebhookDelivery},
        errors=(401, 404, 409),
        tag=_TAG,
        scope=_SCOPE,
    ),
    Operation(
        "GET",
        "/v1/webhooks/{id}/deliveries",
        webhooks.list_deliveries,
        "The endpoint's delivery log, newest first",
        "admin",
        responses={200: WebhookDeliveryPage},
        errors=(400, 401, 404),
        params=(Param("state", {"enum": list(DELIVERY_STATES)}), *PAGE),
        tag=_TAG,
        scope=_SCOPE,
        description=(
            "The endpoint's deliveries, newest first, optionally of one state (pending, delivered, "
            "failed), with their attempts and last answer."
        ),
    ),
    Operation(
        "GET",
        "/v1/webhooks/{id}/deliveries/{deliveryId}",
        webhooks.get_delivery,
        "Get a delivery, with the payload it sends",
        "admin",
        responses={200: WebhookDeliveryDetail},
        errors=(401, 404),
        tag=_TAG,
        scope=_SCOPE,
        description="The delivery, its attempts so far and `payload`, the body as sent.",
    ),
    Operation(
        "POST",
        "/v1/webhooks/{id}/deliveries/{deliveryId}/retry",
        webhooks.retry_delivery,
        "Send a delivered or failed delivery again, due now (409 while it is pending or the endpoint"
        " is disabled)",
        "admin",
        responses={202: WebhookDelivery},
        errors=(401, 404, 409),
        tag=_TAG,
        scope=_SCOPE,
    ),
]
