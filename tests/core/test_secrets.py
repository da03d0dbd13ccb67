"""API keys and Redis passwords never appear in a repr, a str, a log line or an error."""

from __future__ import annotations

import logging
import traceback

import pytest

from flexiai import FlexiAI
from flexiai.config import load_config
from flexiai.exceptions import AllProvidersFailedError
from flexiai.models import FlexiAIConfig, ProviderConfig, RetryConfig, SyncConfig
from flexiai.testing import Error, FakeLLMServer

KEY = "sk-live-TOPSECRET-0123456789"
REDIS_PASSWORD = "redis-PASSWORD-987"


def test_keys_and_passwords_never_leak(caplog: pytest.LogCaptureFixture) -> None:
    with FakeLLMServer() as server:
        # The server echoes the key it rejected, as some providers do.
        server.down("openai", 401)
        server.set_default("openai", Error(401, message=f"Incorrect API key provided: {KEY}"))
        server.up("openai")
        server.set_default("anthropic", Error(500, message=f"upstream said {KEY}"))
        config = FlexiAIConfig(
            providers=[
                ProviderConfig(
                    name="openai", api_key=KEY, model="m", base_url=server.base_url("openai")
                ),
                ProviderConfig(
                    name="anthropic", api_key=KEY, model="m", base_url=server.base_url("anthropic")
                ),
            ],
            sync=SyncConfig(
                redis_password=REDIS_PASSWORD,
                redis_url=f"redis://user:{REDIS_PASSWORD}@127.0.0.1:1/0",
            ),
            retry=RetryConfig(max_retries=0),
        )
        with caplog.at_level(logging.DEBUG):
            client = FlexiAI(config)
            with pytest.raises(AllProvidersFailedError) as info:
                client.generate("hello")
            client.close()
        assert server.requests("openai")[0].headers["authorization"] == f"Bearer {KEY}"

    texts = [
        repr(config),
        str(config),
        repr(config.providers[0]),
        config.model_dump_json(),
        repr(client),
        str(info.value),
        repr(info.value.attempts),
        "".join(traceback.format_exception(info.value)),
        caplog.text,
    ]
    for text in texts:
        assert KEY not in text
        assert REDIS_PASSWORD not in text
    assert "[redacted]" in str(info.value)


def test_config_errors_from_the_environment_do_not_echo_the_key() -> None:
    env = {
        "FLEXIAI_PROVIDER_1_NAME": "openai",
        "FLEXIAI_PROVIDER_1_API_KEY": KEY,
        "FLEXIAI_PROVIDER_1_MODEL": "gpt-4",
        "FLEXIAI_PROVIDER_1_TIMEOUT": "soon",
        "FLEXIAI_SYNC_REDIS_PASSWORD": REDIS_PASSWORD,
        "FLEXIAI_SYNC_REDIS_PORT": "nope",
    }
    with pytest.raises(Exception) as info:  # noqa: PT011 - asserting on the message below
        load_config(env)
    message = "".join(traceback.format_exception(info.value))
    assert "FLEXIAI_PROVIDER_1_TIMEOUT" in message
    assert KEY not in message
    assert REDIS_PASSWORD not in message
