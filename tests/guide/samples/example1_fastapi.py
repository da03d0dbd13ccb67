# app.py
from fastapi import FastAPI
from flexiai import FlexiAI
from flexiai.models import FlexiAIConfig, ProviderConfig, SyncConfig

app = FastAPI()

# Initialize once at module level (shared across requests)
config = FlexiAIConfig(
    providers=[
        ProviderConfig(name="openai", api_key="sk-...", model="gpt-4", priority=1,
                       base_url="http://127.0.0.1:8900/p/openai/v1"),  # base_url added by the test
        ProviderConfig(name="anthropic", api_key="sk-ant-...", model="claude-3-sonnet-20240229", priority=2,
                       base_url="http://127.0.0.1:8900/p/anthropic")  # base_url added by the test
    ],
    sync=SyncConfig(
        enabled=True,
        backend="redis",
        redis_host="localhost"
    )
)

client = FlexiAI(config=config)

@app.post("/generate")
async def generate(prompt: str):
    response = client.generate(prompt=prompt, temperature=0.7)
    return {"response": response.content}

@app.get("/health")
async def health():
    sync_healthy = client._sync_manager.backend.health_check() if client._sync_manager else False
    return {
        "status": "healthy",
        "sync_enabled": client._sync_manager is not None,
        "sync_healthy": sync_healthy
    }

@app.on_event("shutdown")
async def shutdown():
    client.close()
