"""A cause peer of bench/lambda_cold_start.py (``--causes``): event_handler_handler.py's
handler that also reads two keys from Redis with redis-py before answering (one MGET per
invocation, the connection opened on the first), as a snapshot refresh does. Its distance
to event_handler_handler.py is what redis-py costs (its package imports every client:
asyncio, cluster, sentinel); the snapshot variant's distance to the sync-off one, minus
this, is flexiai's own sync code."""

import json
import os
from typing import Any

import event_handler_handler
import redis
from aws_lambda_powertools.utilities.typing import LambdaContext

store = redis.Redis(
    host=os.environ["FLEXIAI_SYNC_REDIS_HOST"],
    port=int(os.environ["FLEXIAI_SYNC_REDIS_PORT"]),
    socket_timeout=0.25,
    socket_connect_timeout=0.5,
)


def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    store.mget(["bench:openai:state", "bench:openai:counts"])
    answer: dict[str, Any] = event_handler_handler.handler(event, context)
    json.loads(answer["body"])
    return answer
