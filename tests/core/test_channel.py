"""The event channel follows the key prefix unless set (issue 11, finding 2): two apps with
different prefixes on one Redis never hear each other's events by default."""

from __future__ import annotations

from flexiai.models import SyncConfig


def test_the_default_channel_is_the_guides() -> None:
    assert SyncConfig().channel == "flexiai:events"


def test_the_channel_follows_the_key_prefix() -> None:
    assert SyncConfig(key_prefix="app-b").channel == "app-b:events"
    assert SyncConfig(key_prefix="{shop}").channel == "{shop}:events"


def test_an_explicit_channel_wins_as_in_the_guide() -> None:
    config = SyncConfig(key_prefix="myapp:flexiai", channel="myapp:flexiai:events")
    assert config.channel == "myapp:flexiai:events"
    assert SyncConfig(key_prefix="a", channel="shared").channel == "shared"
