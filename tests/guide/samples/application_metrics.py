import logging

# FlexiAI logs sync events
logging.basicConfig(level=logging.INFO)
