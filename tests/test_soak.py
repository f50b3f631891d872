"""The fleet simulator for a short while against the test stack — the short variant of ``make soak``
(docs/reliability.md), judged by the same bars: every answer a designed one, every accepted
heartbeat stored once, every remote command sent delivered and carried out, every webhook caused
delivered with a valid signature, memory flat, the outbox and the consumers keeping up; revoked TVs
pair again by themselves."""

from __future__ import annotations

import argparse

import msgspec

from bench.simulate import add_arguments, print_report, simulate
from tests.stack import Stack


async def test_a_short_soak_of_a_simulated_fleet(settings, sockets):
    # The four services share this test's event loop, which a busy machine makes lag: a gateway
    # shedding for lag would send every TV away for 5-15 s (designed, and tested in
    # test_gateway_scale), leaving the run too few rounds to judge. Separate processes in a
    # deployment; here the gateway is told to be patient.
    patient = msgspec.structs.replace(settings, gateway_max_lag_ms=10_000)
    async with Stack(patient, sockets) as stack:
        await _soak(stack)


async def _soak(stack: Stack) -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(
        [
            "--tvs",
            "60",
            "--seconds",
            "10",
            "--poll-every",
            "1",
            "--revoke-share",
            "0.05",
            "--sample-every",
            "1",
            "--commands",
            "6",
            # The playlist and the commands held as a TV app holds them (docs/tv-app.md).
            "--wait",
            "3",
            # Within the test's own timeout, so a miss is reported by the asserts below.
            "--patience",
            "30",
        ]
    )
    args.url = stack.base_url
    args.operator_token = stack.settings.operator_token
    args.services = [
        f"{name}={stack.url(name)}" for name in ("registry", "provisioning", "device-gateway", "heartbeat")
    ]
    report = await simulate(args)
    assert not report.errors, report.errors
    accepted = report.heartbeats_accepted
    assert sum(accepted.values()) >= 60 * 5, (accepted, report.answers)  # every TV lived for several rounds
    assert {screen: report.stored[screen] for screen in accepted} == dict(accepted)  # none lost, none twice
    assert report.answers["config 304"] > report.answers["config 200"]  # ETags spare the bodies
    # Revoked TVs paired again (one revoked near the end may not have polled since).
    assert report.revokes == 3 and 1 <= report.repairs <= report.revokes
    if report.commands_skipped:  # a registry without remote commands: the gateway's side is untried
        assert "404" in report.commands_skipped, report.commands_skipped
    else:
        assert len(report.commands_sent) == 6 and report.commands_carried_out >= 6, sorted(
            report.command_outcomes.values()
        )
        assert set(report.command_outcomes.values()) == {"succeeded, delivered"}, report.command_outcomes
    # Every webhook the run caused reached the simulator's receiver, each signature verified.
    hooks = report.webhooks
    assert not hooks.skipped, hooks.skipped
    assert hooks.by_type["device.bound"] >= 60 and hooks.by_type["device.revoked"] >= 3, hooks.by_type
    assert hooks.by_type["command.succeeded"] == 6, hooks.by_type
    assert not report.webhooks_missed and not hooks.bad_signatures, (report.webhooks_missed, hooks)
    # The services share this test's process, so each reports the same memory; one figure is enough.
    assert len(report.samples) >= 5 and report.samples[-1].memory
    assert print_report(report, args)  # memory, outbox lag and consumer backlog within the bars
