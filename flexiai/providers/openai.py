"""OpenAI Chat Completions, and every server that speaks it (Azure OpenAI, vLLM, Ollama,
OpenRouter) through ``base_url``.

``options``: ``headers`` (extra headers), ``api_version`` (Azure: sends ``api-key`` and the
``api-version`` query instead of a bearer token), ``path`` (default ``/chat/completions``).
Any other option goes into the request body as-is (``top_p``, ``seed``, ...).
"""

from __future__ import annotations

from typing import Any

from flexiai.models import UnifiedResponse, Usage
from flexiai.providers.base import ChatRequest, HttpProvider, HttpRequestSpec

__all__ = ["OpenAIProvider"]

DEFAULT_BASE_URL = "https://api.openai.com/v1"
_TRANSPORT_OPTIONS = {"headers", "api_version", "path"}


class OpenAIProvider(HttpProvider):
    def build_request(self, request: ChatRequest) -> HttpRequestSpec:
        opts = {**self.config.options, **request.options}
        base = self.config.base_url or DEFAULT_BASE_URL
        url = base + str(opts.get("path", "/chat/completions"))
        headers = {"content-type": "application/json", **dict(opts.get("headers", {}))}
        key = self._api_key()
        if opts.get("api_version"):
            url += f"?api-version={opts['api_version']}"
            if key:
                headers["api-key"] = key
        elif key:
            headers["authorization"] = f"Bearer {key}"
        messages: list[dict[str, str]] = []
        if request.system:
            messages.append({"role": "system", "content": request.system})
        messages.extend({"role": m.role, "content": m.content} for m in request.messages)
        body: dict[str, Any] = {"model": self.config.model, "messages": messages}
        if request.temperature is not None:
            body["temperature"] = request.temperature
        if request.max_tokens is not None:
            body["max_tokens"] = request.max_tokens
        body.update({k: v for k, v in opts.items() if k not in _TRANSPORT_OPTIONS})
        return HttpRequestSpec("POST", url, headers, body)

    def parse_body(self, body: Any) -> UnifiedResponse:
        choice = body["choices"][0]
        content = choice["message"]["content"]
        if not isinstance(content, str):
            raise TypeError("choices[0].message.content is not a string")
        usage = body.get("usage") or {}
        return UnifiedResponse(
            content=content,
            model=str(body.get("model") or self.config.model),
            provider=self.name,
            usage=Usage(
                prompt_tokens=int(usage.get("prompt_tokens", 0)),
                completion_tokens=int(usage.get("completion_tokens", 0)),
                total_tokens=int(usage.get("total_tokens", 0)),
            ),
            finish_reason=choice.get("finish_reason"),
        )
