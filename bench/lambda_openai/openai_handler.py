"""The peer of bench/lambda_cold_start.py: the generate handler written with the official
openai SDK (its layer holds the SDK and its dependencies). Same event, same server."""

import json
import os
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext
from openai import OpenAI

logger = Logger()
client = OpenAI(
    base_url=os.environ["FLEXIAI_PROVIDER_1_BASE_URL"],
    api_key=os.environ["FLEXIAI_PROVIDER_1_API_KEY"],
    max_retries=2,
    timeout=30,
)


@logger.inject_lambda_context
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    body = json.loads(event["body"])
    answer = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": body["prompt"]}]
    )
    return {"statusCode": 200, "body": json.dumps({"content": answer.choices[0].message.content})}
