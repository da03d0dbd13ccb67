"""ElastiCache IAM auth: the token's shape and signature, its cache, and a real AUTH with it."""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, quote

import pytest
from botocore.credentials import Credentials, ReadOnlyCredentials

from flexiai.circuit_breaker._machine import Op
from flexiai.circuit_breaker.stores._iam import ElastiCacheIAMProvider
from flexiai.circuit_breaker.stores.redis import RedisSyncBackend
from flexiai.exceptions import ConfigError
from flexiai.testing.clock import FakeClock
from flexiai_dev.servers import RedisProcess
from tests.circuit_breaker.conftest import policy
from tests.support.redis_fixtures import sync_config_for

SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"


class CountingCredentials(Credentials):
    """Fixed fake credentials that count how often a token is signed."""

    def __init__(self, token: str | None = "session/token+=") -> None:
        super().__init__("AKIDEXAMPLE", SECRET, token)
        self.signings = 0

    def get_frozen_credentials(self) -> ReadOnlyCredentials:
        self.signings += 1
        return super().get_frozen_credentials()


def provider(clock: FakeClock | None = None, **kwargs: Any) -> ElastiCacheIAMProvider:
    kwargs.setdefault("credentials", CountingCredentials())
    return ElastiCacheIAMProvider("app-user", "my-cache", "eu-west-1", clock=clock, **kwargs)


def expected_signature(token: str, region: str = "eu-west-1") -> str:
    """SigV4 for a presigned GET, computed here from the spec rather than by botocore."""
    host, _, query = token.partition("/?")
    params = parse_qsl(query, keep_blank_values=True)
    fields = dict(params)
    canonical_query = "&".join(
        f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}"
        for k, v in sorted(params)
        if k != "X-Amz-Signature"
    )
    canonical_request = "\n".join(
        ["GET", "/", canonical_query, f"host:{host}", "", "host", hashlib.sha256(b"").hexdigest()]
    )
    date = fields["X-Amz-Date"][:8]
    scope = f"{date}/{region}/elasticache/aws4_request"
    to_sign = "\n".join(
        [
            "AWS4-HMAC-SHA256",
            fields["X-Amz-Date"],
            scope,
            hashlib.sha256(canonical_request.encode()).hexdigest(),
        ]
    )
    key = f"AWS4{SECRET}".encode()
    for part in (date, region, "elasticache", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()


def test_token_is_a_presigned_connect_url_without_scheme() -> None:
    user, token = provider().get_credentials()
    assert user == "app-user"
    assert token.startswith("my-cache/?Action=connect&User=app-user&ResourceType=ServerlessCache&")
    assert "://" not in token
    fields = dict(parse_qsl(token.partition("?")[2]))
    assert fields["X-Amz-Algorithm"] == "AWS4-HMAC-SHA256"
    assert fields["X-Amz-Expires"] == "900"
    assert fields["X-Amz-SignedHeaders"] == "host"
    assert fields["X-Amz-Security-Token"] == "session/token+="
    access_key, date, region, service, terminal = fields["X-Amz-Credential"].split("/")
    assert (access_key, region, service, terminal) == (
        "AKIDEXAMPLE",
        "eu-west-1",
        "elasticache",
        "aws4_request",
    )
    assert date == fields["X-Amz-Date"][:8]
    assert fields["X-Amz-Signature"] == expected_signature(token)


def test_node_based_caches_have_no_resource_type() -> None:
    _, token = provider(
        serverless=False, credentials=CountingCredentials(token=None)
    ).get_credentials()
    fields = dict(parse_qsl(token.partition("?")[2]))
    assert "ResourceType" not in fields and "X-Amz-Security-Token" not in fields
    assert token.startswith("my-cache/?Action=connect&User=app-user&X-Amz-")
    assert fields["X-Amz-Signature"] == expected_signature(token)


def test_the_token_is_reused_for_ten_minutes() -> None:
    clock, credentials = FakeClock(), CountingCredentials()
    iam = provider(clock, credentials=credentials)
    first = iam.get_credentials()
    clock.advance(599)
    assert iam.get_credentials() == first
    assert credentials.signings == 1
    clock.advance(1)
    iam.get_credentials()
    assert credentials.signings == 2


def test_the_token_never_shows_in_repr_or_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    iam = provider()
    _, token = iam.get_credentials()
    signature = dict(parse_qsl(token.partition("?")[2]))["X-Amz-Signature"]
    assert signature not in repr(iam)
    assert signature not in caplog.text


def test_token_ttl_must_stay_inside_the_token_lifetime() -> None:
    with pytest.raises(ValueError, match="token_ttl"):
        provider(token_ttl=900)


def test_a_missing_region_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    config = sync_config_for(
        _Address(), redis_iam_auth=True, redis_username="u", redis_iam_cache_name="c"
    )
    with pytest.raises(ConfigError, match="region"):
        RedisSyncBackend(config)
    monkeypatch.setenv("AWS_REGION", "us-east-2")
    RedisSyncBackend(config).close()


class _Address:
    host, port, password, tls = "127.0.0.1", 1, None, None


def test_iam_auth_against_a_real_tls_server(
    tls_redis: RedisProcess,
    make_backend: Callable[..., RedisSyncBackend],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A ``nopass`` user accepts any password, so the token's AUTH can be observed locally:
    the backend authenticates as the IAM user over TLS and works."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    with tls_redis.client() as admin:
        admin.execute_command("ACL", "SETUSER", "iam-user", "on", "nopass", "~*", "&*", "+@all")
        config = sync_config_for(
            tls_redis,
            redis_ssl=False,  # IAM implies TLS
            redis_iam_auth=True,
            redis_username="iam-user",
            redis_iam_cache_name="local-cache",
            redis_iam_region="us-east-1",
        )
        backend = make_backend(config)
        assert backend.describe().endswith("(iam)") and backend.describe().startswith("rediss://")
        assert backend.transition("openai", Op.FAILURE, policy(), "w").record.run == 1
        users = {
            line.split(" user=")[1].split()[0]
            for line in admin.execute_command("CLIENT", "LIST").decode().splitlines()
        }
        assert "iam-user" in users
