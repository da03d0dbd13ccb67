"""A noisy-but-healthy provider on the fake LLM server, and what the harness makes of it.

Real HTTP on loopback: the server fails a seeded fraction of a provider's calls with a
transient 5xx, steered directly, through its HTTP control API or by a fleet's script.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from flexiai.models import CircuitBreakerConfig, SyncConfig
from flexiai.testing import FakeLLMServer
from flexiai_dev.fleet import (
    BreakerEvent,
    Call,
    FleetResult,
    FleetSpec,
    HttpController,
    RequestRecord,
    Step,
)

BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=5.0) as client:
        yield client


def statuses(http: httpx.Client, server: FakeLLMServer, name: str, n: int) -> list[int]:
    url = server.base_url(name) + "/chat/completions"
    return [http.post(url, json=BODY).status_code for _ in range(n)]


def test_a_noisy_provider_fails_the_same_calls_in_every_run(http: httpx.Client) -> None:
    runs = []
    for _ in range(2):
        with FakeLLMServer() as server:
            server.noisy("openai", 0.2, seed=3)
            runs.append(statuses(http, server, "openai", 200))
            assert server.noise_errors("openai") == runs[-1].count(500)
    assert runs[0] == runs[1]
    assert set(runs[0]) == {200, 500}
    assert 20 <= runs[0].count(500) <= 60  # about a fifth


def test_the_seed_the_rate_and_the_status_choose_the_failures(
    fake_llm: FakeLLMServer, http: httpx.Client
) -> None:
    fake_llm.noisy("openai", 0.5, seed=1)
    first = statuses(http, fake_llm, "openai", 40)
    fake_llm.noisy("openai", 0.5, seed=2)
    assert statuses(http, fake_llm, "openai", 40) != first
    fake_llm.noisy("openai", 1.0, status=529)
    assert set(statuses(http, fake_llm, "openai", 10)) == {529}
    fake_llm.noisy("openai", 0.0)  # quiet again
    assert set(statuses(http, fake_llm, "openai", 10)) == {200}
    assert set(statuses(http, fake_llm, "anthropic", 5)) == {200}  # only that provider


def test_down_wins_over_noise_and_noise_over_the_script(
    fake_llm: FakeLLMServer, http: httpx.Client
) -> None:
    from flexiai.testing import Reply

    fake_llm.script("openai", [Reply("scripted")] * 3)
    fake_llm.noisy("openai", 1.0)
    fake_llm.down("openai")
    assert statuses(http, fake_llm, "openai", 2) == [503, 503]
    fake_llm.up("openai")
    assert statuses(http, fake_llm, "openai", 2) == [500, 500]
    assert fake_llm.pending("openai") == 3  # the script waits
    fake_llm.noisy("openai", 0.0)
    reply = http.post(fake_llm.base_url("openai") + "/chat/completions", json=BODY).json()
    assert reply["choices"][0]["message"]["content"] == "scripted"


@pytest.mark.parametrize(("rate", "status"), [(-0.1, 500), (1.5, 500), (0.5, 200), (0.5, 700)])
def test_a_rate_or_status_out_of_range_is_refused(
    fake_llm: FakeLLMServer, rate: float, status: int
) -> None:
    with pytest.raises(ValueError, match=r"rate|status"):
        fake_llm.noisy("openai", rate, status=status)


def test_the_http_controller_makes_a_provider_noisy_in_another_process(
    fake_llm: FakeLLMServer, http: httpx.Client
) -> None:
    control = HttpController(fake_llm.url)
    try:
        control.noisy("openai", 1.0, status=502, seed=9)
        assert statuses(http, fake_llm, "openai", 3) == [502] * 3
        control.noisy("openai", 0.0)
        assert statuses(http, fake_llm, "openai", 3) == [200] * 3
        assert control.count("openai") == 6
        refused = http.post(fake_llm.url + "/_control/openai/noisy", params={"rate": "2"})
        assert refused.status_code == 400
        assert "rate" in refused.json()["error"]["message"]
    finally:
        control.close()


# -- the spec -------------------------------------------------------------------------------

PROVIDERS = (("openai", "http://127.0.0.1:1/p/openai/v1"), ("anthropic", "http://x/p/anthropic"))


def test_the_breaker_fields_reach_the_client_config() -> None:
    spec = FleetSpec(
        providers=PROVIDERS,
        workers=2,
        sync="snapshot",
        redis_url="redis://127.0.0.1:1/0",
        failure_threshold=7,
        failure_rate_threshold=30.0,
        minimum_calls=50,
        failure_window=9.0,
        slow_call_duration=1.5,
        slow_call_rate_threshold=80.0,
        flush_interval=0.5,
        error_rate=0.02,
        script=(Step(1.0, "noisy", "openai", 0.5), Step(2.0, "noisy", "openai")),
    )
    assert FleetSpec.from_json(spec.to_json()) == spec
    config = spec.client_config(1)
    assert config.circuit_breaker.model_dump(exclude={"failure_on"}) == {
        **CircuitBreakerConfig().model_dump(exclude={"failure_on"}),
        "failure_threshold": 7,
        "failure_rate_threshold": 30.0,
        "minimum_calls": 50,
        "failure_window": 9.0,
        "slow_call_duration": 1.5,
        "slow_call_rate_threshold": 80.0,
        "recovery_timeout": spec.recovery_timeout,
        "probe_lease_ttl": spec.probe_lease_ttl,
    }
    assert isinstance(config.sync, SyncConfig)
    assert config.sync.flush_interval == 0.5
    assert config.sync.mode == "snapshot"


def test_the_pybreaker_peer_gets_one_client_per_provider_whose_breaker_counts_nothing() -> None:
    spec = FleetSpec(providers=PROVIDERS, breaker="pybreaker", redis_url="redis://127.0.0.1:1/0")
    assert spec.variant == "pybreaker"
    config = spec.client_config(0, only="anthropic")
    assert [p.name for p in config.providers] == ["anthropic"]
    assert not config.sync.enabled
    failure_on = config.circuit_breaker.failure_on
    assert callable(failure_on)
    assert not isinstance(failure_on, tuple)
    assert failure_on(RuntimeError("boom")) is False


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"error_rate": 1.5}, "error_rate"),
        ({"breaker": "pybreaker"}, "needs redis_url"),
    ],
)
def test_a_noisy_spec_that_cannot_run_is_refused(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        FleetSpec(**{"providers": PROVIDERS, "sync": "off", **overrides})


def test_a_noisy_step_rate_out_of_range_is_refused() -> None:
    with pytest.raises(ValueError, match="between 0 and 1"):
        Step(1.0, "noisy", "openai", 2.0)


# -- a stretch of a run, from hand-made records --------------------------------------------


def request(worker: int, t: float, *calls: tuple[str, int | None, str]) -> RequestRecord:
    made = tuple(Call(p, t, status, state) for p, status, state in calls)
    answered = next((c.provider for c in made if c.ok), None)
    return RequestRecord(worker, t, t + 0.01, answered is not None, answered, made)


def test_a_phase_counts_share_waste_the_time_until_the_fleet_skips_and_probes() -> None:
    spec = FleetSpec(providers=PROVIDERS, workers=2, sync="off", duration=10.0)
    records = [
        request(0, 0.5, ("openai", 500, "CLOSED"), ("anthropic", 200, "CLOSED")),  # before
        request(0, 1.0, ("openai", 200, "CLOSED")),
        request(1, 1.1, ("openai", 500, "CLOSED"), ("anthropic", 200, "CLOSED")),  # first
        request(0, 1.2, ("openai", 500, "CLOSED"), ("anthropic", 200, "CLOSED")),
        request(1, 1.5, ("anthropic", 200, "OPEN")),
        request(0, 1.6, ("anthropic", 200, "OPEN")),
        request(1, 3.5, ("openai", 200, "HALF_OPEN")),  # the probe at recovery
        request(0, 3.6, ("openai", 200, "CLOSED")),
    ]
    events = [
        BreakerEvent(1, 1.3, "openai", "CLOSED", "OPEN", False),
        BreakerEvent(0, 1.45, "openai", "CLOSED", "OPEN", True),
        BreakerEvent(1, 3.5, "openai", "OPEN", "HALF_OPEN", False),
    ]
    result = FleetResult(spec, records, events, [], {}, 0.0)

    phase = result.phase(1.0, 3.0, until=5.0)

    assert phase.requests == 5
    assert phase.answered == 5
    assert phase.primary_share == pytest.approx(1 / 5)
    assert phase.primary_calls == 3
    assert phase.wasted_calls == 2
    assert phase.opened
    assert phase.first_failure == pytest.approx(1.1)
    assert phase.fleet_skips_after == pytest.approx(0.35)  # worker 0 left CLOSED at 1.45
    assert phase.probes_after == 1


def test_a_phase_where_the_breaker_stays_closed_never_skips() -> None:
    spec = FleetSpec(providers=PROVIDERS, workers=2, sync="off", duration=10.0)
    records = [
        request(0, 1.0, ("openai", 500, "CLOSED"), ("anthropic", 200, "CLOSED")),
        request(1, 1.1, ("openai", 200, "CLOSED")),
    ]
    phase = FleetResult(spec, records, [], [], {}, 0.0).phase(0.0, 2.0)
    assert phase.primary_share == pytest.approx(0.5)
    assert not phase.opened
    assert phase.fleet_skips_after is None
    assert phase.probes_after == 0
