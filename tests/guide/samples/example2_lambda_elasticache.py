import os
from flexiai import FlexiAI
from flexiai.models import FlexiAIConfig, ProviderConfig, SyncConfig

# Initialize outside handler (reused across invocations)
config = FlexiAIConfig(
    providers=[
        ProviderConfig(
            name="openai",
            api_key=os.getenv("OPENAI_API_KEY"),
            model="gpt-4-turbo-preview",
            priority=1,
            base_url="http://127.0.0.1:8900/p/openai/v1",  # added by the test
        )
    ],
    sync=SyncConfig(
        enabled=True,
        backend="redis",
        redis_host=os.getenv("ELASTICACHE_ENDPOINT"),
        redis_port=6379,
        redis_ssl=True,
        state_ttl=300  # 5 minutes for serverless
    )
)

client = FlexiAI(config=config)

def lambda_handler(event, context):
    prompt = event.get("prompt", "Hello, world!")

    response = client.generate(
        prompt=prompt,
        temperature=0.7,
        max_tokens=100
    )

    return {
        "statusCode": 200,
        "body": {
            "response": response.content,
            "provider": response.metadata.get("provider"),
            "worker_id": client._sync_manager.worker_id if client._sync_manager else None
        }
    }
