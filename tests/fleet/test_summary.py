"""The harness's figures from hand-made records: what each definition counts, and what not."""

from __future__ import annotations

import pytest

from flexiai_dev.fleet import (
    Call,
    FleetResult,
    FleetSpec,
    RequestRecord,
    Step,
    outage_spec,
)

PROVIDERS = (("openai", "http://127.0.0.1:1/p/openai/v1"), ("anthropic", "http://x/p/anthropic"))


def spec(**overrides: object) -> FleetSpec:
    settings: dict[str, object] = {
        "providers": PROVIDERS,
        "workers": 2,
        "sync": "off",
        "script": (Step(1.0, "down", "openai"), Step(3.0, "up", "openai")),
    }
    settings.update(overrides)
    return FleetSpec(**settings)  # type: ignore[arg-type]


def request(worker: int, t: float, *calls: tuple[str, int | None, str]) -> RequestRecord:
    made = tuple(Call(p, t, status, state) for p, status, state in calls)
    ok = any(c.ok for c in made)
    answered = next((c.provider for c in made if c.ok), None)
    return RequestRecord(worker, t, t + 0.01, ok, answered, made)


def test_the_summary_counts_waste_failover_probes_and_failback() -> None:
    records = [
        request(0, 0.5, ("openai", 200, "CLOSED")),
        request(0, 1.1, ("openai", 503, "CLOSED"), ("anthropic", 200, "CLOSED")),
        request(1, 1.2, ("openai", 503, "CLOSED"), ("anthropic", 200, "CLOSED")),
        request(1, 1.4, ("anthropic", 200, "CLOSED")),  # failed over
        request(0, 2.0, ("openai", 503, "HALF_OPEN"), ("anthropic", 200, "CLOSED")),  # probe
        request(1, 3.2, ("openai", 200, "HALF_OPEN")),  # the probe at recovery
        request(0, 3.3, ("openai", 200, "CLOSED")),
        RequestRecord(1, 3.5, 3.6, False, None, (), "AllProvidersFailedError"),
    ]
    result = FleetResult(spec(), records, [], [], {}, 0.0)

    summary = result.summary()

    assert summary.wasted_calls == 3
    assert summary.failover_time == pytest.approx(0.2)  # last closed-view call at 1.2
    assert summary.outage_probes == 1
    assert summary.probes_at_recovery == 1
    assert summary.failback_time == pytest.approx(0.3)  # worker 0 back at 3.3
    assert summary.failed_requests == 1
    assert summary.calls_by_provider == {"openai": 6, "anthropic": 4}


def test_failback_is_unknown_until_every_worker_has_answered_from_the_primary() -> None:
    records = [request(0, 3.2, ("openai", 200, "HALF_OPEN"))]
    result = FleetResult(spec(), records, [], [], {}, 0.0)
    assert result.summary().failback_time is None


def test_a_spec_survives_the_trip_to_a_worker() -> None:
    original = outage_spec(PROVIDERS, duration=6.0, workers=3, sync="off", rates=(1.0, 2.0, 3.0))
    assert FleetSpec.from_json(original.to_json()) == original
    assert original.script[0].at < original.script[1].at < original.duration
    assert original.recovery_timeout < original.script[1].at - original.script[0].at


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"sync": "pubsub"}, "needs redis_url"),
        ({"rates": (1.0,)}, "one entry per worker"),
        ({"workers": 0}, "must be positive"),
        ({"providers": ()}, "at least one provider"),
    ],
)
def test_a_spec_that_cannot_run_is_refused(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        spec(**overrides)


def test_the_http_controller_steers_a_fake_server_in_another_process() -> None:
    import httpx

    from flexiai.testing import FakeLLMServer
    from flexiai_dev.fleet import HttpController

    with FakeLLMServer() as server:
        control = HttpController(server.url)
        try:
            url = server.base_url("openai") + "/chat/completions"
            body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
            control.down("openai")
            assert httpx.post(url, json=body).status_code == 503
            control.up("openai")
            assert httpx.post(url, json=body).status_code == 200
            assert control.count("openai") == 2
        finally:
            control.close()
