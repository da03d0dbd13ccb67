"""The floor of bench/lambda_cold_start.py: the least a Powertools handler that answers a
prompt through an OpenAI-compatible server can do (Logger, one pooled httpx client, no
retries, no breaker, no validation). Same event, same server, same layers as the generate
handler."""

import json
import os
from typing import Any

import httpx
from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext

logger = Logger()
client = httpx.Client(
    base_url=os.environ["FLEXIAI_PROVIDER_1_BASE_URL"],
    headers={"authorization": f"Bearer {os.environ['FLEXIAI_PROVIDER_1_API_KEY']}"},
    timeout=30,
)


@logger.inject_lambda_context
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    body = json.loads(event["body"])
    answer = client.post(
        "/chat/completions",
        json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": body["prompt"]}]},
    )
    answer.raise_for_status()
    content = answer.json()["choices"][0]["message"]["content"]
    return {"statusCode": 200, "body": json.dumps({"content": content})}
