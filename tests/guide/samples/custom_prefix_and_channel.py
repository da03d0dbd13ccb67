sync=SyncConfig(
    enabled=True,
    backend="redis",
    redis_host="localhost",
    key_prefix="myapp:flexiai",  # Default: "flexiai"
    channel="myapp:flexiai:events",  # Default: "flexiai:events"
    state_ttl=7200  # State expires after 2 hours (default: 3600)
)
