"""Fuzzed provider answers over real HTTP (issue 12, "Tests"): whatever body a provider
sends, the client either uses it or records a typed ``ProviderError`` for that call and
fails over to the next provider. Deep nesting, huge bodies, bad encodings, wrong types and
truncated streams included; never a ``RecursionError``, an ``OverflowError`` or a hang.

The fuzzed primary is ``FakeLLMServer`` (``Malformed`` sends a body byte for byte, ``Error``
any body with any status); truncated streams come from ``RawServer``, which can lie in
``Content-Length``. The backup is a healthy fake provider."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flexiai import FlexiAI
from flexiai import exceptions as errors
from flexiai.events import ClientEvent, ProviderCallFailed
from flexiai.models import CircuitBreakerConfig, FlexiAIConfig, RetryConfig
from flexiai.providers.base import MAX_RESPONSE_BYTES
from flexiai.testing import Error, FakeLLMServer, Malformed
from tests.providers.raw_server import RawServer, json_reply
from tests.providers.test_deadlines import ANSWERS
from tests.support.llm_fixtures import provider_config

KINDS = ("openai", "anthropic", "gemini", "bedrock")
FUZZ = settings(
    max_examples=25,
    deadline=None,  # no timing: a busy machine is not a failure
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
#: The typed errors a failed call may be recorded as (exceptions.py's tree).
PROVIDER_ERRORS = {
    name
    for name in errors.__all__
    if isinstance(cls := getattr(errors, name), type) and issubclass(cls, errors.ProviderError)
}


class Failures:
    """The client's record of each failed provider call."""

    def __init__(self) -> None:
        self.seen: list[ProviderCallFailed] = []

    def __call__(self, event: ClientEvent) -> None:
        if isinstance(event, ProviderCallFailed):
            self.seen.append(event)

    def take(self) -> list[ProviderCallFailed]:
        seen, self.seen = self.seen, []
        return seen


class Rig:
    """A client whose primary (of one kind) answers whatever a test scripts, with a healthy
    backup after it. The primary's breaker never opens, so every example reaches it."""

    def __init__(self, fake: FakeLLMServer, kind: str, primary_url: str | None = None) -> None:
        primary = provider_config(fake, "primary", kind=kind, priority=1)
        if primary_url is not None:
            primary = primary.model_copy(update={"base_url": primary_url})
        self.fake = fake
        self.failures = Failures()
        self.client = FlexiAI(
            FlexiAIConfig(
                providers=[primary, provider_config(fake, "backup", kind="openai", priority=2)],
                retry=RetryConfig(max_retries=0),
                circuit_breaker=CircuitBreakerConfig(
                    failure_threshold=10_000, minimum_calls=1_000_000
                ),
            )
        )
        self.client.add_listener(self.failures)

    def ask(self) -> tuple[str, list[ProviderCallFailed]]:
        self.failures.take()
        # One client serves every example: without a reset, earlier examples' failures
        # open the primary's breaker and it is skipped instead of called.
        self.client.reset_circuit_breakers()
        response = self.client.generate("hello")
        assert isinstance(response.content, str)
        return response.provider, self.failures.take()

    def assert_failed_over(self, provider: str, failed: list[ProviderCallFailed]) -> None:
        """The primary's answer was used, or its call failed with a typed error and the
        backup answered."""
        if provider == "primary":
            assert failed == []
            return
        assert provider == "backup"
        assert [f.provider for f in failed] == ["primary"]
        assert failed[0].error_type in PROVIDER_ERRORS, failed[0].error_type


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeLLMServer]:
    with FakeLLMServer() as server:
        yield server


@pytest.fixture(scope="module", params=KINDS)
def rig(request: pytest.FixtureRequest, fake: FakeLLMServer) -> Iterator[Rig]:
    rig = Rig(fake, request.param)
    yield rig
    rig.client.close()


# -- bodies ----------------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.sampled_from([10**400, "\ud800", "\x00", "Infinity"])
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


def encode(value: Any) -> bytes:
    """JSON as a careless server writes it: non-finite floats and lone surrogates pass."""
    return json.dumps(value, allow_nan=True).encode("utf-8", "surrogatepass")


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in ``value`` a wrong type can be put."""
    found = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, item in value.items():
            found += paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += paths(item, (*prefix, index))
    return found


def replaced(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    copy = json.loads(json.dumps(value))
    target = copy
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = new
    return copy


def near_the_shape(kind: str) -> st.SearchStrategy[bytes]:
    """The API's own answer with one value, anywhere in it, of a wrong type or value: where
    an adapter's reading is most exposed."""
    answer = ANSWERS[kind]
    return st.builds(
        lambda path, new: encode(replaced(answer, path, new)),
        st.sampled_from(paths(answer)),
        json_values,
    )


def nested(depth: int, kind: str) -> bytes:
    """The answer with a ``depth``-deep list where its text should be."""
    text = json.dumps(ANSWERS[kind]).replace('"from the trickle"', "[" * depth + "]" * depth)
    return text.encode()


def bad_encodings(kind: str) -> st.SearchStrategy[bytes]:
    text = json.dumps(ANSWERS[kind])
    return st.sampled_from(
        [
            text.encode("utf-16"),
            text.encode("utf-32"),
            b"\xff\xfe" + text.encode(),
            text.replace("from the trickle", "caf\xe9").encode("latin-1"),
            text.encode()[:-1] + b"\xc3",  # a multi-byte character cut short
            text.replace('"from the trickle"', '"\\ud800"').encode(),
        ]
    )


def bodies(kind: str) -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.binary(max_size=300),
        json_values.map(encode),
        near_the_shape(kind),
        near_the_shape(kind),
        bad_encodings(kind),
        st.integers(min_value=1, max_value=100_000).map(lambda n: nested(n, kind)),
        st.sampled_from([b"[" * 200_000, b'{"a":' * 100_000, b"1" * 100_000, b"-" + b"9" * 5000]),
    )


@FUZZ
@given(data=st.data())
def test_a_fuzzed_200_body_is_used_or_failed_over_from(rig: Rig, data: st.DataObject) -> None:
    kind = rig.client.config.providers[0].kind
    assert kind is not None
    body = data.draw(bodies(kind))
    status = data.draw(st.sampled_from([200, 200, 201, 203]))
    rig.fake.script("primary", [Malformed(body, status=status)])

    provider, failed = rig.ask()

    rig.assert_failed_over(provider, failed)


#: What the caller got wrong (a bad request, an unknown model): raised, not failed over.
CALLERS_MISTAKES = (400, 404, 409, 413, 422)


@FUZZ
@given(data=st.data())
def test_a_fuzzed_error_body_fails_over_or_is_the_callers_mistake(
    rig: Rig, data: st.DataObject
) -> None:
    status = data.draw(st.sampled_from([*CALLERS_MISTAKES, 401, 403, 408, 429, 500, 503, 529]))
    body = data.draw(
        st.one_of(
            json_values,
            st.integers(min_value=1, max_value=50_000).map(
                lambda n: json.loads("[" * min(n, 500) + "]" * min(n, 500))
            ),
        )
    )
    retry_after = data.draw(st.none() | st.sampled_from(["1e309", "inf", "-1", "soon", "0"]))
    rig.fake.script("primary", [Error(status, body=body, retry_after=retry_after)])

    if status in CALLERS_MISTAKES:
        with pytest.raises(errors.InvalidRequestError) as info:
            rig.ask()
        assert info.value.provider == "primary"
        return
    provider, failed = rig.ask()

    assert provider == "backup"
    rig.assert_failed_over(provider, failed)


@pytest.mark.parametrize("kind", KINDS)
def test_a_huge_body_is_a_malformed_answer_and_the_client_fails_over(
    fake: FakeLLMServer, kind: str
) -> None:
    rig = Rig(fake, kind)
    try:
        rig.fake.script("primary", [Malformed(b'{"x": "' + b"a" * MAX_RESPONSE_BYTES + b'"}')])
        provider, failed = rig.ask()
    finally:
        rig.client.close()

    assert provider == "backup"
    assert [(f.provider, f.error_type) for f in failed] == [("primary", "MalformedResponseError")]


@pytest.fixture(scope="module", params=KINDS)
def cut_rig(request: pytest.FixtureRequest, fake: FakeLLMServer) -> Iterator[tuple[Rig, RawServer]]:
    """A rig whose primary is a ``RawServer``, which can promise more than it sends."""
    with RawServer(json_reply(b"{}")) as raw:
        rig = Rig(fake, request.param, primary_url=raw.url)
        yield rig, raw
        rig.client.close()


@FUZZ
@given(data=st.data())
def test_a_stream_cut_anywhere_fails_over(
    cut_rig: tuple[Rig, RawServer], data: st.DataObject
) -> None:
    rig, raw = cut_rig
    kind = rig.client.config.providers[0].kind
    assert kind is not None
    whole = json.dumps(ANSWERS[kind]).encode()
    cut = data.draw(st.integers(min_value=0, max_value=len(whole) - 1))
    declared = data.draw(st.sampled_from([len(whole), len(whole) * 2, 10**6]))
    raw.answer_with(json_reply(whole[:cut], content_length=declared))

    provider, failed = rig.ask()

    assert provider == "backup"
    rig.assert_failed_over(provider, failed)


@pytest.mark.parametrize(
    ("status", "expected"),
    [(400, "InvalidRequestError"), (404, "InvalidRequestError"), (429, "RateLimited")],
)
@pytest.mark.parametrize("body", [[], 5, "text", [[[]]]], ids=repr)
def test_bedrock_classifies_an_error_whose_body_is_not_an_object_by_its_status(
    fake: FakeLLMServer, status: int, expected: str, body: Any
) -> None:
    """Found by the fuzz above: botocore cannot parse such a body, and the adapter called
    it malformed, so a 400 was retried and failed over instead of reaching the caller."""
    rig = Rig(fake, "bedrock")
    try:
        rig.fake.script("primary", [Error(status, body=body)])
        if expected == "InvalidRequestError":
            with pytest.raises(errors.InvalidRequestError) as info:
                rig.ask()
            assert info.value.status_code == status
            return
        provider, failed = rig.ask()
    finally:
        rig.client.close()

    assert provider == "backup"
    assert [(f.error_type, f.status_code) for f in failed] == [(expected, status)]
