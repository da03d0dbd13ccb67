"""Names of the environment variables flexiai reads, each stated once.

The ``FLEXIAI_<SECTION>_<FIELD>`` variables are derived from the models' field names by
``flexiai.config``; these are the ones that are not model fields.
"""

from __future__ import annotations

__all__ = [
    "CONFIG_FILE_VARIABLE",
    "ENV_PREFIX",
    "SAFETY_MARGIN_VARIABLE",
    "SECRETS_MAX_AGE_VARIABLE",
]

ENV_PREFIX = "FLEXIAI_"
#: A JSON or YAML file of the configuration's shape, which variables override.
CONFIG_FILE_VARIABLE = "FLEXIAI_CONFIG_FILE"
#: Milliseconds kept free before Lambda's deadline (the middleware).
SAFETY_MARGIN_VARIABLE = "FLEXIAI_LAMBDA_SAFETY_MARGIN_MS"
#: Seconds a resolved secret is reused (the Lambda kit's secrets).
SECRETS_MAX_AGE_VARIABLE = "FLEXIAI_SECRETS_MAX_AGE"
