"""Without the redis package, enabling Redis sync fails at construction and says how to fix
it, instead of running per-process breakers in silence (issue 12, finding 5).

The package is hidden from a fresh interpreter by a meta-path finder, as a virtualenv
without it would be; nothing in flexiai is patched.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent(
    """
    import sys

    class NoRedis:
        def find_spec(self, name, path=None, target=None):
            if name == "redis" or name.startswith("redis."):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, NoRedis())

    from flexiai import FlexiAI
    from flexiai.exceptions import ConfigError
    from flexiai.models import FlexiAIConfig, ProviderConfig, SyncConfig

    providers = [ProviderConfig(name="openai", api_key="sk-x", model="gpt-4o-mini")]
    FlexiAI(FlexiAIConfig(providers=providers)).close()  # sync off: redis is not needed
    try:
        FlexiAI(FlexiAIConfig(providers=providers, sync=SyncConfig(enabled=True)))
    except ConfigError as exc:
        print(exc)
    else:
        print("constructed")
    """
)


def test_sync_without_redis_fails_at_construction_with_the_fix() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, cwd=ROOT, check=False
    )
    assert proc.returncode == 0, proc.stderr
    message = proc.stdout
    assert "constructed" not in message
    assert "pip install redis" in message
    assert "pip install 'flexiai[redis]'" in message
    assert "FLEXIAI_SYNC_ENABLED" in message and "sync.backend" in message
