"""Who may do what on the bus: each service's NATS user and the subjects it may publish and subscribe.

One table, rendered into every server's configuration: ``make run`` and the tests' servers (see
``devstack.infra``), compose's and the Helm chart's (checked against this table by the tests).
Anonymous connections are refused wherever it is rendered.

A service *writes* the subjects it publishes (events, KV puts, object chunks). It reads a stream in
up to three ways, each a set of JetStream API requests: it *follows* it (consumers of its own
making that push to its inbox: KV watches, the heartbeat stream), it *consumes* its durables by
name (pulls, acks), or it *gets* messages by sequence or subject. Replies come to the user's own
inbox prefix, so no service reads another's answers. Only ``setup`` may create or change streams
and buckets: a service checks they are there (stream info) and waits for ``setup``.

Why pulls and gets are not everyone's: the server answers a request on whatever reply subject it
names, and a stream that captures that subject stores the answer. A pull or a direct get with its
reply in ``$KV.device-keys.`` would store a chosen message (a tenant's file, a key entry from
before its revoke) as a device key. A consumer's pushes go only where a client listens, and a user
listens only on its own inbox; what else a request can make the server store is the server's own
JSON (an API answer, a publish's ack), never a key entry. So the internet-facing gateway only
follows, and pulls and gets are the internal services' alone.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from shared.projections import (
    DEVICE_COMMANDS_BUCKET,
    DEVICE_FILES_BUCKET,
    DEVICE_KEYS_BUCKET,
    REVOKED_CLIENTS_BUCKET,
    SCREEN_CONTENT_BUCKET,
    SCREENSHOTS_BUCKET,
    kv_stream,
)

# The deployment's administrator: the setup step (streams, buckets) and an operator's tools.
SETUP_USER = "setup"
_FILES_STREAM = f"OBJ_{DEVICE_FILES_BUCKET}"
_SCREENSHOTS_STREAM = f"OBJ_{SCREENSHOTS_BUCKET}"


@dataclass(frozen=True)
class Access:
    """A user's rights: what it publishes (but for ``denied``), the streams it follows, the
    durables it consumes as (stream, durable), the streams it gets messages from, and other
    JetStream API requests (``requests``: any subject, acks included)."""

    writes: tuple[str, ...] = ()
    denied: tuple[str, ...] = ()
    follows: tuple[str, ...] = ()
    consumes: tuple[tuple[str, str], ...] = ()
    gets: tuple[str, ...] = ()
    requests: tuple[str, ...] = ()

    def publish(self) -> list[str]:
        # Looking streams up (names, their configuration and counts) is every user's.
        allowed = [
            *self.writes,
            *self.requests,
            "$JS.API.INFO",
            "$JS.API.STREAM.INFO.*",
            "$JS.API.STREAM.NAMES",
        ]
        for stream in self.follows:
            # Without a name: an ephemeral consumer (the server refuses a durable name here).
            allowed += [f"$JS.API.CONSUMER.CREATE.{stream}", f"$JS.API.CONSUMER.INFO.{stream}.*"]
            allowed.append(f"$JS.FC.{stream}.>")
        for stream, durable in self.consumes:
            allowed += [
                f"$JS.API.CONSUMER.DURABLE.CREATE.{stream}.{durable}",
                f"$JS.API.CONSUMER.CREATE.{stream}.{durable}",
                f"$JS.API.CONSUMER.CREATE.{stream}.{durable}.>",
                f"$JS.API.CONSUMER.INFO.{stream}.{durable}",
                f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}",
                f"$JS.ACK.{stream}.{durable}.>",
            ]
        for stream in self.gets:
            allowed += [
                f"$JS.API.STREAM.MSG.GET.{stream}",
                f"$JS.API.DIRECT.GET.{stream}",
                f"$JS.API.DIRECT.GET.{stream}.>",
            ]
        return allowed


def inbox_prefix(user: str) -> str:
    """Where ``user``'s replies come (NATS's default, ``_INBOX``, would be every user's)."""
    return f"_INBOX_{user.replace('-', '_')}"


ACCESS: dict[str, Access] = {
    "registry": Access(
        writes=(
            "registry.>",
            f"$KV.{SCREEN_CONTENT_BUCKET}.>",
            f"$KV.{REVOKED_CLIENTS_BUCKET}.>",
            f"$KV.{DEVICE_COMMANDS_BUCKET}.>",
            f"$O.{DEVICE_FILES_BUCKET}.>",
        ),
        follows=(kv_stream(REVOKED_CLIENTS_BUCKET), _FILES_STREAM, _SCREENSHOTS_STREAM),
        consumes=(
            ("EVENTS", "registry-binding"),
            ("HEARTBEATS", "registry-presence"),
            ("DEVICE_EVENTS", "registry-command-reports"),
            ("EVENTS", "registry-webhooks"),
        ),
        # The object store's own reads (an object's metadata, its chunks).
        gets=(_FILES_STREAM, _SCREENSHOTS_STREAM),
        # Replacing or deleting a file purges its old chunks.
        requests=(f"$JS.API.STREAM.PURGE.{_FILES_STREAM}",),
    ),
    "provisioning": Access(
        writes=("provisioning.>", f"$KV.{DEVICE_KEYS_BUCKET}.>"),
        follows=(kv_stream(REVOKED_CLIENTS_BUCKET),),
        consumes=(("EVENTS", "provisioning-screens"),),
    ),
    # The internet-facing one: it follows what devices are served and reports what they say, no
    # more (see the module's docstring for why it neither pulls nor gets).
    "device-gateway": Access(
        writes=("heartbeat.*.*", "device_events.*.*", "device_commands.*.*", f"$O.{SCREENSHOTS_BUCKET}.>"),
        # The heartbeat service's word on a screen, which shares the heartbeats' stream.
        denied=("heartbeat.presence.changed",),
        follows=(
            kv_stream(DEVICE_KEYS_BUCKET),
            kv_stream(SCREEN_CONTENT_BUCKET),
            kv_stream(DEVICE_COMMANDS_BUCKET),
            _FILES_STREAM,
        ),
        # A file is read a chunk at a time, each acked before the next is sent.
        requests=(f"$JS.ACK.{_FILES_STREAM}.>",),
    ),
    "heartbeat": Access(
        writes=("heartbeat.presence.changed",),
        # The heartbeat stream of an admin's event stream (SSE), and revoked clients.
        follows=("HEARTBEATS", kv_stream(REVOKED_CLIENTS_BUCKET)),
        consumes=(("HEARTBEATS", "heartbeat-presence"), ("EVENTS", "heartbeat-screens")),
    ),
}


def server_authorization(passwords: dict[str, str]) -> dict[str, object]:
    """The ``authorization`` block of a nats-server configuration: every user of :data:`ACCESS` and
    :data:`SETUP_USER` with ``passwords[user]`` (a string, or a ``$VARIABLE`` the server reads from
    its environment); nobody else gets in."""
    users: list[dict[str, object]] = [{"user": SETUP_USER, "password": passwords[SETUP_USER]}]
    for user, access in ACCESS.items():
        publish: dict[str, list[str]] = {"allow": access.publish()}
        if access.denied:
            publish["deny"] = list(access.denied)
        users.append(
            {
                "user": user,
                "password": passwords[user],
                "permissions": {"publish": publish, "subscribe": {"allow": [inbox_prefix(user) + ".>"]}},
            }
        )
    return {"users": users}


USERS = (SETUP_USER, *ACCESS)


def password_variable(user: str) -> str:
    """The environment variable a deployed nats-server reads ``user``'s password from."""
    return "NATS_PASSWORD_" + user.upper().replace("-", "_")


def server_config(passwords: dict[str, str]) -> str:
    """A nats-server configuration file's ``authorization`` block (JSON, which the server reads);
    a password given as ``$VARIABLE`` is left unquoted, so the server takes it from its environment."""
    text = json.dumps({"authorization": server_authorization(passwords)}, indent=1)
    return re.sub(r'"(\$NATS_PASSWORD_[A-Z_]+)"', r"\1", text) + "\n"
