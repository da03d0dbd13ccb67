# app.py
from flexiai import FlexiAI
from flexiai.models import FlexiAIConfig, SyncConfig

config = FlexiAIConfig(
    providers=[  # the guide's `providers=[...]`, filled in by the test
        ProviderConfig(name="openai", api_key="sk-test", model="gpt-4",
                       base_url="http://127.0.0.1:8900/p/openai/v1"),
    ],
    sync=SyncConfig(
        enabled=True,
        backend="redis",
        redis_host="localhost",  # Redis on same server
        redis_port=6379
    )
)

# Shared across all workers
client = FlexiAI(config=config)
