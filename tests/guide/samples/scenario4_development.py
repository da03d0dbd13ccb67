config = FlexiAIConfig(
    providers=[  # the guide's `providers=[...]`, filled in by the test
        ProviderConfig(name="openai", api_key="sk-test", model="gpt-4",
                       base_url="http://127.0.0.1:8900/p/openai/v1"),
    ],
    sync=SyncConfig(
        enabled=False  # Disable sync for development
    )
)
disabled_config = config

# OR: Enabled but with memory backend (single process only)
config = FlexiAIConfig(
    providers=[  # the guide's `providers=[...]`, filled in by the test
        ProviderConfig(name="openai", api_key="sk-test", model="gpt-4",
                       base_url="http://127.0.0.1:8900/p/openai/v1"),
    ],
    sync=SyncConfig(
        enabled=True,
        backend="memory"  # In-memory, no Redis required
    )
)
