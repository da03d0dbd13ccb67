"""Google Gemini ``generateContent`` over REST (the Generative Language API).

The API key travels in the ``x-goog-api-key`` header, never in the ``?key=`` query that
Google's examples use, so it cannot end up in access logs, proxies or exception URLs.

Two Gemini habits need translating, not just passing through the base class:

* A bad API key is answered with **HTTP 400** ``INVALID_ARGUMENT`` (reason
  ``API_KEY_INVALID``). Left to the status code it would be an ``InvalidRequestError``,
  raised to the caller with no failover; it is a ``ProviderAuthError``.
* A 429 usually says how long to wait only in the body (``RetryInfo.retryDelay: "27s"``),
  so that is read when there is no ``Retry-After`` header.

A 200 without text because Gemini's safety filters blocked the prompt
(``promptFeedback.blockReason``) or the answer (``finishReason`` ``SAFETY``,
``PROHIBITED_CONTENT``, ...) raises ``InvalidRequestError``. It is not a malformed response:
that would be retried against the same filter and counted toward the breaker, opening the
circuit of a healthy provider because of one user's content. Like any invalid request it goes
back to the caller, who decides what to tell the user; flexiai does not quietly send content
one vendor refused to another.

``options``: ``api_version`` (default ``v1beta``), ``headers`` (extra headers),
``generationConfig`` (merged into the generated one: ``topP``, ``stopSequences``,
``responseMimeType``, ...). Any other option goes into the request body as-is
(``safetySettings``, ``tools``, ...).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

import httpx

from flexiai.exceptions import (
    InvalidRequestError,
    ProviderAuthError,
    ProviderError,
    RateLimited,
)
from flexiai.models import UnifiedResponse, Usage
from flexiai.providers.base import ChatRequest, HttpProvider, HttpRequestSpec

__all__ = ["GeminiProvider"]

DEFAULT_BASE_URL = "https://generativelanguage.googleapis.com"
DEFAULT_API_VERSION = "v1beta"
_TRANSPORT_OPTIONS = {"headers", "api_version", "generationConfig"}
#: finishReason values meaning "refused", as opposed to "stopped" (STOP, MAX_TOKENS).
_BLOCKED_FINISH = {
    "SAFETY",
    "RECITATION",
    "BLOCKLIST",
    "PROHIBITED_CONTENT",
    "SPII",
    "IMAGE_SAFETY",
}
_AUTH_REASONS = {"API_KEY_INVALID", "API_KEY_EXPIRED", "API_KEY_SERVICE_BLOCKED"}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s*$")


class GeminiProvider(HttpProvider):
    def build_request(self, request: ChatRequest) -> HttpRequestSpec:
        opts = {**self.config.options, **request.options}
        model = self.config.model.removeprefix("models/")
        url = (
            f"{self.config.base_url or DEFAULT_BASE_URL}/"
            f"{opts.get('api_version', DEFAULT_API_VERSION)}/models/"
            f"{quote(model, safe='-._~')}:generateContent"
        )
        headers = {"content-type": "application/json", **dict(opts.get("headers", {}))}
        key = self._api_key()
        if key:
            headers["x-goog-api-key"] = key
        system = [request.system] if request.system else []
        system.extend(m.content for m in request.messages if m.role == "system")
        body: dict[str, Any] = {
            "contents": [
                {
                    "role": "model" if m.role == "assistant" else "user",
                    "parts": [{"text": m.content}],
                }
                for m in request.messages
                if m.role != "system"
            ]
        }
        if system:
            body["systemInstruction"] = {"parts": [{"text": text} for text in system]}
        generation: dict[str, Any] = {}
        if request.temperature is not None:
            generation["temperature"] = request.temperature
        if request.max_tokens is not None:
            generation["maxOutputTokens"] = request.max_tokens
        generation.update(dict(opts.get("generationConfig", {})))
        if generation:
            body["generationConfig"] = generation
        body.update({k: v for k, v in opts.items() if k not in _TRANSPORT_OPTIONS})
        return HttpRequestSpec("POST", url, headers, body)

    def parse_body(self, body: Any) -> UnifiedResponse:
        candidates = body.get("candidates")
        if not candidates:
            reason = (body.get("promptFeedback") or {}).get("blockReason")
            if reason:
                raise InvalidRequestError(
                    f"prompt blocked by Gemini ({reason})", provider=self.name
                )
            raise ValueError("no candidates and no promptFeedback.blockReason")
        candidate = candidates[0]
        finish = candidate.get("finishReason")
        parts = (candidate.get("content") or {}).get("parts") or []
        texts: list[str] = []
        for part in parts:
            if "text" in part and not part.get("thought"):
                if not isinstance(part["text"], str):
                    raise TypeError("candidates[0].content.parts[].text is not a string")
                texts.append(part["text"])
        if not texts:
            if finish in _BLOCKED_FINISH:
                raise InvalidRequestError(
                    f"answer blocked by Gemini ({finish})", provider=self.name
                )
            if finish is None:
                raise ValueError("candidate has neither text nor finishReason")
        usage = body.get("usageMetadata") or {}
        prompt = int(usage.get("promptTokenCount", 0))
        completion = int(usage.get("candidatesTokenCount", 0))
        return UnifiedResponse(
            content="".join(texts),
            model=str(body.get("modelVersion") or self.config.model),
            provider=self.name,
            usage=Usage(
                prompt_tokens=prompt,
                completion_tokens=completion,
                total_tokens=int(usage.get("totalTokenCount", prompt + completion)),
            ),
            finish_reason=finish,
        )

    def classify_error(self, response: httpx.Response, body: Any) -> ProviderError:
        error = super().classify_error(response, body)
        details = _error_details(body)
        if isinstance(error, InvalidRequestError) and any(
            d.get("reason") in _AUTH_REASONS for d in details
        ):
            return ProviderAuthError(
                error.message, provider=self.name, status_code=error.status_code
            )
        if isinstance(error, RateLimited) and error.retry_after is None:
            for detail in details:
                match = _DURATION.match(str(detail.get("retryDelay", "")))
                if match:
                    error.retry_after = float(match.group(1))
                    break
        return error


def _error_details(body: Any) -> list[dict[str, Any]]:
    """The ``google.rpc`` detail objects of an error body, or nothing."""
    error = body.get("error") if isinstance(body, dict) else None
    details = error.get("details") if isinstance(error, dict) else None
    if not isinstance(details, list):
        return []
    return [d for d in details if isinstance(d, dict)]
