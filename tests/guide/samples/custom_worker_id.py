sync=SyncConfig(
    enabled=True,
    backend="redis",
    redis_host="localhost",
    worker_id="web-worker-1"  # Custom identifier
)
