"""The fleet simulator (``make simulate``) for a short while against the stack: every answer is
a designed one, every accepted heartbeat is stored, revoked TVs pair again by themselves. The
long soak is ``make run`` + ``make simulate`` (README "Reliability")."""

from __future__ import annotations

import argparse

from bench.simulate import simulate


async def test_a_short_soak_of_a_simulated_fleet(stack):
    args = argparse.Namespace(
        url=stack.base_url,
        operator_token=stack.settings.operator_token,
        tvs=60,
        seconds=10,
        poll_every=1,
        revoke_share=0.05,
        connections=50,
        services=[stack.url(name) for name in ("registry", "provisioning", "device-gateway", "heartbeat")],
    )
    report = await simulate(args)
    assert not report.errors, report.errors
    accepted = report.heartbeats_accepted
    assert sum(accepted.values()) >= 60 * 5, accepted  # every TV lived for several rounds
    assert {screen: report.stored[screen] for screen in accepted} == dict(accepted)  # none lost, none twice
    assert report.answers["config 304"] > report.answers["config 200"]  # ETags spare the bodies
    # Revoked TVs paired again (one revoked near the end may not have polled since).
    assert report.revokes == 3 and 1 <= report.repairs <= report.revokes
