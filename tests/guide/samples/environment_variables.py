from flexiai import FlexiAI
from flexiai.config import load_config

config = load_config()  # Loads from environment
client = FlexiAI(config=config)
