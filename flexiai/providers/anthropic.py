"""Anthropic Messages API (``POST /v1/messages``).

Differs from OpenAI in three ways that matter here: the system prompt is a top-level field
rather than a message, ``max_tokens`` is mandatory (we send 1024 when the caller gives
none), and the answer is a list of content blocks of which only ``text`` blocks are text.
A 529 "overloaded" is a 5xx, so the base class already makes it a retryable
``ProviderServerError``; errors arrive as ``{"type": "error", "error": {"message": ...}}``,
which the base ``error_message`` reads.

``options``: ``anthropic_version`` (default ``2023-06-01``), ``headers`` (extra headers, e.g.
``anthropic-beta``). Any other option goes into the request body as-is (``top_k``,
``stop_sequences``, ``metadata``, ...).
"""

from __future__ import annotations

from typing import Any

from flexiai.models import UnifiedResponse, Usage
from flexiai.providers.base import ChatRequest, HttpProvider, HttpRequestSpec

__all__ = ["AnthropicProvider"]

DEFAULT_BASE_URL = "https://api.anthropic.com"
DEFAULT_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 1024
_TRANSPORT_OPTIONS = {"headers", "anthropic_version"}


class AnthropicProvider(HttpProvider):
    def build_request(self, request: ChatRequest) -> HttpRequestSpec:
        opts = {**self.config.options, **request.options}
        url = (self.config.base_url or DEFAULT_BASE_URL) + "/v1/messages"
        headers = {
            "content-type": "application/json",
            "anthropic-version": str(opts.get("anthropic_version", DEFAULT_VERSION)),
            **dict(opts.get("headers", {})),
        }
        key = self._api_key()
        if key:
            headers["x-api-key"] = key
        # Anthropic has no "system" role: fold system messages into the top-level field.
        system = [request.system] if request.system else []
        system.extend(m.content for m in request.messages if m.role == "system")
        body: dict[str, Any] = {
            "model": self.config.model,
            "max_tokens": (
                request.max_tokens if request.max_tokens is not None else DEFAULT_MAX_TOKENS
            ),
            "messages": [
                {"role": m.role, "content": m.content}
                for m in request.messages
                if m.role != "system"
            ],
        }
        if system:
            body["system"] = "\n\n".join(system)
        if request.temperature is not None:
            body["temperature"] = request.temperature
        body.update({k: v for k, v in opts.items() if k not in _TRANSPORT_OPTIONS})
        return HttpRequestSpec("POST", url, headers, body)

    def parse_body(self, body: Any) -> UnifiedResponse:
        blocks = body["content"]
        if not isinstance(blocks, list):
            raise TypeError("content is not a list of blocks")
        texts: list[str] = []
        for block in blocks:
            if block["type"] == "text":
                if not isinstance(block["text"], str):
                    raise TypeError("text block's text is not a string")
                texts.append(block["text"])
        usage = body.get("usage") or {}
        prompt = int(usage.get("input_tokens", 0))
        completion = int(usage.get("output_tokens", 0))
        return UnifiedResponse(
            content="".join(texts),
            model=str(body.get("model") or self.config.model),
            provider=self.name,
            usage=Usage(
                prompt_tokens=prompt,
                completion_tokens=completion,
                total_tokens=prompt + completion,
            ),
            finish_reason=body.get("stop_reason"),
        )
