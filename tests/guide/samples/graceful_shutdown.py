# Context manager (recommended)
with FlexiAI(config=config) as client:
    response = client.generate(prompt="Hello")
# Automatically calls close()

# Manual cleanup
client = FlexiAI(config=config)
try:
    response = client.generate(prompt="Hello")
finally:
    client.close()  # Stops sync manager, closes Redis connection
