"""API keys from Secrets Manager and SSM, through moto: both code paths (Powertools
Parameters and plain boto3), the errors, and the cache."""

from __future__ import annotations

import json
import subprocess
import sys
import traceback
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from moto import mock_aws

from flexiai import FlexiAI
from flexiai._deadline import deadline
from flexiai.aws.secrets import SecretResolver, clear_cache, resolve_reference
from flexiai.exceptions import AllProvidersFailedError, SecretResolutionError
from flexiai.models import FlexiAIConfig, ProviderConfig, RetryConfig
from flexiai.testing import FakeLLMServer
from tests.providers.raw_server import RawReply, RawServer

KEY = "sk-live-FROM-AWS-0123456789"


@pytest.fixture
def aws() -> Iterator[None]:
    with mock_aws():
        yield


@pytest.fixture
def secrets(aws: None) -> Any:
    client = boto3.client("secretsmanager", region_name="us-east-1")
    client.create_secret(Name="openai-key", SecretString=json.dumps({"api_key": KEY}))
    client.create_secret(Name="plain-key", SecretString=f"  {KEY}\n")
    client.create_secret(Name="not-json", SecretString=f"key={KEY}")
    client.create_secret(Name="json-list", SecretString=json.dumps([KEY]))
    return client


@pytest.fixture
def ssm(aws: None) -> Any:
    client = boto3.client("ssm", region_name="us-east-1")
    client.put_parameter(Name="/flexiai/openai", Value=KEY, Type="SecureString")
    client.put_parameter(
        Name="/flexiai/bundle", Value=json.dumps({"api_key": KEY}), Type="SecureString"
    )
    return client


# Both ways of fetching: Powertools Parameters (the default when installed) and boto3.
@pytest.fixture(params=["powertools", "boto3"])
def resolver(request: pytest.FixtureRequest) -> SecretResolver:
    return SecretResolver(use_powertools=request.param == "powertools")


def resolution_error(resolver: SecretResolver, reference: str) -> SecretResolutionError:
    with pytest.raises(SecretResolutionError) as info:
        resolver.resolve(reference, provider="openai")
    return info.value


def full_text(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc))


# -- resolving ---------------------------------------------------------------------------------


def test_a_json_field_of_a_secret_is_the_key(secrets: Any, resolver: SecretResolver) -> None:
    assert resolver.resolve("secretsmanager:openai-key#api_key", provider="openai") == KEY


def test_a_whole_secret_string_is_the_key_without_surrounding_whitespace(
    secrets: Any, resolver: SecretResolver
) -> None:
    assert resolver.resolve("secretsmanager:plain-key", provider="openai") == KEY


def test_a_secret_can_be_named_by_its_arn(secrets: Any, resolver: SecretResolver) -> None:
    arn = secrets.describe_secret(SecretId="openai-key")["ARN"]
    assert resolver.resolve(f"secretsmanager:{arn}#api_key", provider="openai") == KEY


def test_an_ssm_secure_string_is_decrypted(ssm: Any, resolver: SecretResolver) -> None:
    assert resolver.resolve("ssm:/flexiai/openai", provider="openai") == KEY


def test_a_json_field_of_an_ssm_parameter_is_the_key(ssm: Any, resolver: SecretResolver) -> None:
    assert resolver.resolve("ssm:/flexiai/bundle#api_key", provider="openai") == KEY


def test_resolve_reference_uses_powertools_when_installed(secrets: Any) -> None:
    assert resolve_reference("secretsmanager:openai-key#api_key", provider="openai") == KEY
    # Defined in parameters.constants; base imports it without re-exporting it.
    from aws_lambda_powertools.utilities.parameters.base import (  # type: ignore[attr-defined]
        DEFAULT_PROVIDERS,
    )

    assert "secrets" in DEFAULT_PROVIDERS  # fetched (and cached) by Powertools


# -- errors name the reference and the provider, never the value ----------------------------


def test_a_missing_secret_names_the_reference_and_the_provider(
    secrets: Any, resolver: SecretResolver
) -> None:
    error = resolution_error(resolver, "secretsmanager:nope#api_key")
    assert error.reference == "secretsmanager:nope#api_key"
    assert error.provider == "openai"
    assert "not found (ResourceNotFoundException)" in str(error)
    assert "'secretsmanager:nope#api_key'" in str(error)
    assert "'openai'" in str(error)


def test_a_missing_ssm_parameter_is_not_found(ssm: Any, resolver: SecretResolver) -> None:
    error = resolution_error(resolver, "ssm:/flexiai/nope")
    assert "not found (ParameterNotFound)" in error.reason


@pytest.mark.parametrize(
    ("reference", "reason"),
    [
        ("secretsmanager:openai-key#token", "the secret has no field 'token'"),
        ("secretsmanager:not-json#api_key", "the secret is not JSON, so it has no field"),
        ("secretsmanager:json-list#api_key", "JSON but not an object"),
    ],
)
def test_a_missing_field_or_a_non_json_secret_never_shows_the_value(
    secrets: Any, resolver: SecretResolver, reference: str, reason: str
) -> None:
    error = resolution_error(resolver, reference)
    assert reason in error.reason
    assert reference in str(error)
    assert KEY not in full_text(error)
    assert error.__cause__ is None  # no chained JSONDecodeError: its .doc is the secret
    assert error.__context__ is None or error.__suppress_context__


def test_a_field_that_is_not_a_string_is_rejected(aws: None, resolver: SecretResolver) -> None:
    boto3.client("secretsmanager", region_name="us-east-1").create_secret(
        Name="numeric", SecretString=json.dumps({"api_key": 12345})
    )
    error = resolution_error(resolver, "secretsmanager:numeric#api_key")
    assert "field 'api_key' of the secret is not a non-empty string" in error.reason
    assert "12345" not in full_text(error)


@pytest.mark.parametrize(
    ("reference", "reason"),
    [
        ("secretsmanager:", "names no secret"),
        ("ssm:", "names no secret"),
        ("secretsmanager:name#", "empty field name"),
        ("vault:name", "not a reference"),
    ],
)
def test_malformed_references_are_rejected_before_any_call(reference: str, reason: str) -> None:
    error = resolution_error(SecretResolver(use_powertools=False), reference)
    assert reason in error.reason


def test_access_denied_says_to_check_the_iam_policy() -> None:
    client = boto3.client("secretsmanager", region_name="us-east-1")
    stubber = Stubber(client)
    stubber.add_client_error(
        "get_secret_value", service_error_code="AccessDeniedException", http_status_code=400
    )
    resolver = SecretResolver(use_powertools=False, client_factory=lambda service: client)
    with stubber:
        error = resolution_error(resolver, "secretsmanager:openai-key#api_key")
    assert error.reason == "access denied (AccessDeniedException): check the function's IAM policy"
    assert type(error.__cause__).__name__ == "ClientError"  # kept for debugging: no value in it


def test_a_bad_max_age_variable_names_the_variable(
    secrets: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLEXIAI_SECRETS_MAX_AGE", "forever")
    error = resolution_error(SecretResolver(), "secretsmanager:openai-key#api_key")
    assert "FLEXIAI_SECRETS_MAX_AGE" in error.reason


# -- caching -----------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_boto3_values_are_reused_until_max_age_then_fetched_again(secrets: Any) -> None:
    clock = Clock()
    resolver = SecretResolver(use_powertools=False, max_age=300, clock=clock)
    reference = "secretsmanager:openai-key#api_key"
    assert resolver.resolve(reference, provider="openai") == KEY
    secrets.put_secret_value(SecretId="openai-key", SecretString=json.dumps({"api_key": "new"}))
    clock.now += 299
    assert resolver.resolve(reference, provider="openai") == KEY  # cached
    clock.now += 2
    assert resolver.resolve(reference, provider="openai") == "new"  # rotated key picked up


def test_a_cached_value_serves_every_field_of_the_same_secret(secrets: Any) -> None:
    client = boto3.client("secretsmanager", region_name="us-east-1")
    calls: list[str] = []
    client.meta.events.register(
        "before-call.secrets-manager.GetSecretValue", lambda **kw: calls.append("get")
    )
    resolver = SecretResolver(use_powertools=False, max_age=300, client_factory=lambda s: client)
    resolver.resolve("secretsmanager:openai-key#api_key", provider="openai")
    resolver.resolve("secretsmanager:openai-key#api_key", provider="openai-backup")
    assert calls == ["get"]


def test_max_age_zero_fetches_every_time(secrets: Any) -> None:
    resolver = SecretResolver(use_powertools=False, max_age=0)
    assert resolver.resolve("secretsmanager:openai-key#api_key", provider="openai") == KEY
    secrets.put_secret_value(SecretId="openai-key", SecretString=json.dumps({"api_key": "new"}))
    assert resolver.resolve("secretsmanager:openai-key#api_key", provider="openai") == "new"


def test_powertools_caches_values_until_cleared(secrets: Any) -> None:
    reference = "secretsmanager:openai-key#api_key"
    assert resolve_reference(reference, provider="openai") == KEY
    secrets.put_secret_value(SecretId="openai-key", SecretString=json.dumps({"api_key": "new"}))
    assert resolve_reference(reference, provider="openai") == KEY  # Powertools' cache
    clear_cache()
    assert resolve_reference(reference, provider="openai") == "new"


def test_powertools_fetches_every_time_when_the_max_age_variable_is_zero(
    secrets: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLEXIAI_SECRETS_MAX_AGE", "0")
    reference = "secretsmanager:openai-key#api_key"
    assert resolve_reference(reference, provider="openai") == KEY
    secrets.put_secret_value(SecretId="openai-key", SecretString=json.dumps({"api_key": "new"}))
    assert resolve_reference(reference, provider="openai") == "new"


# -- through the client ------------------------------------------------------------------------


def test_the_client_resolves_a_reference_on_first_use_and_sends_the_key(
    secrets: Any, fake_llm: FakeLLMServer
) -> None:
    config = FlexiAIConfig(
        providers=[
            ProviderConfig(
                name="openai",
                model="gpt-4o-mini",
                api_key="secretsmanager:openai-key#api_key",
                base_url=fake_llm.base_url("openai"),
            )
        ]
    )
    with FlexiAI(config) as client:
        assert client.generate("hi").content == "openai says: hi"
    assert fake_llm.requests("openai")[0].headers["authorization"] == f"Bearer {KEY}"


def test_an_unresolvable_key_fails_over_without_leaking_and_without_counting(
    secrets: Any, fake_llm: FakeLLMServer
) -> None:
    config = FlexiAIConfig(
        providers=[
            ProviderConfig(
                name="openai",
                model="m",
                base_url=fake_llm.base_url("openai"),
                api_key="secretsmanager:openai-key#missing",
            ),
            ProviderConfig(
                name="openai-backup",
                model="m",
                base_url=fake_llm.base_url("openai-backup"),
                api_key="secretsmanager:nope",
            ),
        ],
        retry=RetryConfig(max_retries=0),
    )
    client = FlexiAI(config)  # building resolves nothing: nothing fails yet
    with client, pytest.raises(AllProvidersFailedError) as info:
        client.generate("hi")
    first, second = info.value.attempts
    assert first.error_type == second.error_type == "SecretResolutionError"
    assert "has no field 'missing'" in first.message
    assert "not found" in second.message
    assert fake_llm.count("openai") == fake_llm.count("openai-backup") == 0
    assert KEY not in full_text(info.value)
    assert all(s["failures"] == 0 for s in client.get_provider_status().values())


def test_importing_the_secrets_module_imports_neither_powertools_nor_boto3() -> None:
    code = (
        "import sys, flexiai.aws.secrets, flexiai.aws\n"
        "print(sorted(m for m in ('aws_lambda_powertools', 'boto3', 'botocore') "
        "if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"


# -- the deadline ------------------------------------------------------------------------------


@pytest.fixture
def silent_aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[RawServer]:
    """Secrets Manager and SSM endpoints on loopback that accept the request and then say
    nothing for a minute (stopping the server ends that at once). Powertools' provider is
    rebuilt so that it, too, reads the endpoint variables."""
    # Defined in parameters.constants; base imports it without re-exporting it.
    from aws_lambda_powertools.utilities.parameters.base import (  # type: ignore[attr-defined]
        DEFAULT_PROVIDERS,
    )

    silence = RawServer(RawReply(b"HTTP/1.1 200 OK\r\n\r\n", head_interval=60))
    with silence:
        monkeypatch.setenv("AWS_ENDPOINT_URL_SECRETS_MANAGER", silence.url)
        monkeypatch.setenv("AWS_ENDPOINT_URL_SSM", silence.url)
        for name in ("secrets", "ssm"):
            monkeypatch.delitem(DEFAULT_PROVIDERS, name, raising=False)
        yield silence


@pytest.mark.parametrize("path", ["powertools", "boto3"])
@pytest.mark.parametrize("reference", ["secretsmanager:openai-key#api_key", "ssm:/flexiai/key"])
def test_a_lookup_never_outlives_the_deadline(
    silent_aws: RawServer, path: str, reference: str
) -> None:
    resolver = SecretResolver(use_powertools=path == "powertools")

    with deadline(0.5), pytest.raises(SecretResolutionError) as info:
        resolver.resolve(reference, provider="openai")

    assert "did not finish" in info.value.reason  # the silent endpoint never answers


def test_no_time_left_means_no_lookup_at_all(silent_aws: RawServer) -> None:
    with deadline(0), pytest.raises(SecretResolutionError) as info:
        SecretResolver(use_powertools=False).resolve("ssm:/flexiai/key", provider="openai")

    assert "no time left" in info.value.reason
    assert silent_aws.count == 0


def test_without_a_deadline_the_lookup_runs_in_the_callers_thread(secrets: Any) -> None:
    """The control: no deadline, no thread, the same answer."""
    import threading

    seen: list[str] = []
    client = boto3.client("secretsmanager", region_name="us-east-1")
    client.meta.events.register(
        "before-call.secrets-manager.GetSecretValue",
        lambda **kw: seen.append(threading.current_thread().name),
    )
    resolver = SecretResolver(use_powertools=False, client_factory=lambda s: client)

    assert resolver.resolve("secretsmanager:openai-key#api_key", provider="openai") == KEY
    assert seen == [threading.current_thread().name]


def test_a_lookup_slower_than_the_attempt_fails_over_to_the_next_provider(
    silent_aws: RawServer, fake_llm: FakeLLMServer
) -> None:
    """The attempt's timeout bounds the key lookup too: the client moves on, no deadline
    of Lambda's needed."""
    config = FlexiAIConfig(
        providers=[
            ProviderConfig(
                name="openai",
                model="m",
                base_url=fake_llm.base_url("openai"),
                api_key="secretsmanager:openai-key#api_key",
                timeout=1.0,
                priority=1,
            ),
            ProviderConfig(
                name="anthropic",
                model="m",
                base_url=fake_llm.base_url("anthropic"),
                api_key="sk-plain",
                priority=2,
            ),
        ],
        retry=RetryConfig(max_retries=0),
    )
    with FlexiAI(config) as client:
        response = client.generate("hi")

    assert response.provider == "anthropic"
    assert response.metadata["failovers"] == ["openai"]
    assert fake_llm.count("openai") == 0
