from flexiai import FlexiAI
from flexiai.models import FlexiAIConfig, ProviderConfig, SyncConfig

config = FlexiAIConfig(
    providers=[
        ProviderConfig(
            name="openai",
            api_key="your-api-key",
            model="gpt-4",
            priority=1,
            base_url="http://127.0.0.1:8900/p/openai/v1",  # added by the test
        )
    ],
    sync=SyncConfig(
        enabled=True,
        backend="redis",
        redis_host="localhost",
        redis_port=6379,
        redis_db=0
    )
)

client = FlexiAI(config=config)
