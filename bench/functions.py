"""What running the breaker as a Redis Function costs: FCALL next to EVALSHA, per transition.

``redis_use_functions=True`` lets the workers' ACL deny EVAL, EVALSHA and SCRIPT (no busy
loop, no code of their own); this measures whether that costs anything. Two
``RedisSyncBackend``s on one server, one with each setting and each with its own prefix, run
the same transitions (a FAILURE, then a RESET: both write the record and publish an event),
in blocks interleaved round by round so drift hits both alike. The figure is the median
time per transition with FCALL, against EVALSHA as the peer.

    python bench/functions.py [--iterations N] [--rounds R] [--redis-url URL]
"""

from __future__ import annotations

import argparse
import time

from _common import Row, median, print_rows, redis_server, row, server_version

COMMAND = "python bench/functions.py"


def run(url: str | None = None, iterations: int = 1000, rounds: int = 10) -> list[Row]:
    from flexiai.circuit_breaker import Op, Policy
    from flexiai.circuit_breaker.stores.redis import RedisSyncBackend
    from flexiai.models import CircuitBreakerConfig, SyncConfig

    policy = Policy.from_config(
        CircuitBreakerConfig(failure_threshold=10_000, minimum_calls=1_000_000)
    )
    with redis_server(url) as server_url:
        backends = {
            functions: RedisSyncBackend(
                SyncConfig(
                    enabled=True,
                    redis_url=server_url,
                    key_prefix=f"bench-functions-{functions}",
                    redis_use_functions=functions,
                    redis_socket_timeout=5,
                )
            )
            for functions in (False, True)
        }
        try:
            per_op: dict[bool, list[float]] = {False: [], True: []}
            for backend in backends.values():  # load the script and the library
                backend.transition("openai", Op.RESET, policy, "bench")
            for _ in range(rounds):
                for functions, backend in backends.items():
                    start = time.perf_counter()
                    for _ in range(iterations // 2):
                        backend.transition("openai", Op.FAILURE, policy, "bench")
                        backend.transition("openai", Op.RESET, policy, "bench")
                    elapsed = time.perf_counter() - start
                    per_op[functions].append(elapsed / (2 * (iterations // 2)) * 1e6)
            version = server_version(server_url)
        finally:
            for backend in backends.values():
                backend.close()
    return [
        row(
            "functions",
            f"transition with FCALL ({version})",
            median(per_op[True]),
            "us",
            peer="EVALSHA",
            peer_value=median(per_op[False]),
        )
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=1000, help="per block (default 1000)")
    parser.add_argument("--rounds", type=int, default=10, help="interleaved rounds (default 10)")
    parser.add_argument("--redis-url", help="measure against this server instead of a new one")
    args = parser.parse_args()
    print_rows(run(args.redis_url, args.iterations, args.rounds), COMMAND)


if __name__ == "__main__":
    main()
