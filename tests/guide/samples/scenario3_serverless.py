import os
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
        redis_host=os.getenv("REDIS_HOST"),
        redis_port=int(os.getenv("REDIS_PORT", "6379")),
        redis_password=os.getenv("REDIS_PASSWORD"),
        redis_ssl=True,
        state_ttl=300  # Shorter TTL for serverless
    )
)

# Initialize once (outside handler for warm starts)
client = FlexiAI(config=config)

def handler(event, context):
    response = client.generate(
        prompt="Translate to French: Hello world",
        temperature=0.7
    )
    return response
