"""One load generator worker process.

    python -m benchmarks.loadgen --pools FILE [--worker-index I --workers K]

Loads the pools (written by `benchmarks.loadgen.pool.Pools.save`), prints
``{"event": "ready", ...}`` and then reads one JSON object a line on stdin:

- ``{"op": "run", "command": {...}}`` (a `driver.Command`): answers ``{"event": "window_start"}``
  and ``{"event": "window_end"}`` when the window opens and closes, then
  ``{"event": "result", "result": {...}}`` (a `driver.WindowResult`);
- ``{"op": "quit"}``, or the end of stdin: exits.

Worker I of K uses rounds I, I + K, I + 2K, ...: workers never send the same ids, and a
worker's rounds go on from one command to the next.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.loadgen.driver import Command, RoundFeed, run
from benchmarks.loadgen.pool import Pools


def _say(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


async def serve(pools: Pools, worker_index: int, workers: int) -> None:
    rounds = itertools.count(worker_index, workers)
    feeds = {
        variant: [RoundFeed(pool, rounds) for pool in pools.variant(variant)]
        for variant in ("full", "rootless")
    }
    _say({"event": "ready", "spans_per_round": pools.span_count})
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            return
        message = json.loads(line)
        if message.get("op") == "quit":
            return
        command = Command.from_json(message["command"])
        result = await run(command, feeds[command.variant], lambda event: _say({"event": event}))
        _say({"event": "result", "result": result.to_json()})


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="One OTLP/gRPC load generator worker.")
    parser.add_argument("--pools", type=Path, required=True)
    parser.add_argument("--worker-index", type=int, default=0)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args(argv)
    if not 0 <= args.worker_index < args.workers:
        parser.error("need 0 <= --worker-index < --workers")
    asyncio.run(serve(Pools.load(args.pools), args.worker_index, args.workers))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
