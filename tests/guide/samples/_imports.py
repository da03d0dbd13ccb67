# The import lines the guide's fragments rely on (from its Basic Configuration sample).
from flexiai import FlexiAI
from flexiai.models import FlexiAIConfig, ProviderConfig, SyncConfig
