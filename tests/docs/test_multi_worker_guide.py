"""The project's multi-worker deployment guide covers every section of the reference
deployment guide that the public API follows.

The reference guide is not part of this repository, so its headings are listed here, each
with the heading of docs/multi-worker-guide.md that covers its topic. A section added to
the reference belongs in this list, and in the guide.
"""

from __future__ import annotations

import itertools

from tests.docs.markdown import DOCS, headings, prose

GUIDE = DOCS / "multi-worker-guide.md"

# (the reference guide's heading, the heading of our guide that covers it)
REFERENCE_SECTIONS = [
    ("Overview", "Overview"),
    ("Key Features", "What sharing gives you"),
    ("Architecture", "Architecture"),
    ("Components", "Components"),
    ("Data Flow", "Data flow"),
    ("Event Types", "Event types"),
    ("Prerequisites", "Prerequisites"),
    ("Required Dependencies", "Dependencies"),
    ("Redis Server", "A Redis server"),
    ("Install Redis", "Installing Redis"),
    ("Configuration", "Configuration"),
    ("Basic Configuration", "Basic configuration"),
    ("Advanced Configuration", "Authentication and TLS"),
    ("Redis with Authentication", "Authentication and TLS"),
    ("Custom Worker ID", "Worker ids"),
    ("Custom Key Prefix and Channel", "Key prefix, channel and TTL"),
    ("Environment Variables", "Environment variables"),
    ("Deployment Scenarios", "Deployment scenarios"),
    (
        "Scenario 1: Single-Server with Multiple Workers (Gunicorn/Uvicorn)",
        "Scenario 1: one server, several worker processes (gunicorn, uvicorn)",
    ),
    (
        "Scenario 2: Multi-Server Deployment (Kubernetes)",
        "Scenario 2: several servers (Kubernetes)",
    ),
    (
        "Scenario 3: Serverless Functions (AWS Lambda/Cloud Functions)",
        "Scenario 3: serverless (AWS Lambda)",
    ),
    ("Scenario 4: Development Without Redis", "Scenario 4: development without Redis"),
    ("Lifecycle Management", "Lifecycle management"),
    ("Graceful Shutdown", "Graceful shutdown"),
    ("Health Checks", "Health checks"),
    ("Monitoring", "Monitoring"),
    ("Redis Monitoring", "Redis"),
    ("Application Metrics", "Application events and logs"),
    ("Performance Metrics", "What to watch"),
    ("Troubleshooting", "Troubleshooting"),
    ("Issue: Sync not working between workers", "Workers do not share breakers"),
    ("Issue: High Redis memory usage", "Redis uses more memory than expected"),
    ("Issue: Circuit breaker state desynchronization", "Workers disagree about a breaker"),
    ("Issue: Fallback to memory backend", "Workers fall back to local breakers"),
    ("Issue: Slow circuit breaker state updates", "Changes reach other workers slowly"),
    ("Best Practices", "Best practices"),
    ("Examples", "Examples"),
    ("Example 1: FastAPI with Multiple Workers", "Example 1: FastAPI with several workers"),
    ("Example 2: AWS Lambda with ElastiCache Redis", "Example 2: AWS Lambda with ElastiCache"),
    ("Additional Resources", "Further reading"),
    ("Support", "Getting help"),
]


def test_every_reference_section_has_a_heading_in_the_guide() -> None:
    ours = {title for _, title in headings(GUIDE)}
    missing = [(theirs, mine) for theirs, mine in REFERENCE_SECTIONS if mine not in ours]
    assert missing == []


def test_every_section_of_the_guide_has_content() -> None:
    """A heading is followed by text or by subsections, never directly by a heading of its
    own level or higher."""
    lines = prose(GUIDE).splitlines()
    at = [(n, len(line) - len(line.lstrip("#"))) for n, line in enumerate(lines) if line[:1] == "#"]
    for (n, level), (m, next_level) in itertools.pairwise(at):
        body = [line for line in lines[n + 1 : m] if line.strip()]
        assert body or next_level > level, f"{lines[n]!r} is an empty section"
