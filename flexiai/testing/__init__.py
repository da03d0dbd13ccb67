"""Test helpers for applications built on flexiai: a fake LLM server speaking the providers'
real wire formats. Standard library only; each helper lives in its own submodule."""

from __future__ import annotations

from flexiai.testing.clock import FakeClock
from flexiai.testing.fake_llm import Drop, Error, FakeLLMServer, Malformed, Reply, Slow

__all__ = [
    "Drop",
    "Error",
    "FakeClock",
    "FakeLLMServer",
    "Malformed",
    "Reply",
    "Slow",
]
