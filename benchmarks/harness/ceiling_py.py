"""The Python ceiling: the ceiling Lua script from redis-py asyncio + hiredis on one connection,
one call at a time and in 50-deep pipelines. Runs in the base venv; prints one JSON line."""

from __future__ import annotations

import asyncio
import json
import sys
import time

import redis.asyncio as aioredis
from redis.utils import HIREDIS_AVAILABLE

from harness.ceiling import LUA, PAYLOAD_JSON, WAIT_KEY


async def main(url: str, n_single: int, n_pipelined: int, depth: int) -> dict:
    client = aioredis.Redis.from_url(url)
    sha = await client.script_load(LUA)
    for i in range(200):  # warm-up
        await client.evalsha(sha, 2, f"ceil:job:w{i}", WAIT_KEY, PAYLOAD_JSON, i)

    t0 = time.perf_counter()
    for i in range(n_single):
        await client.evalsha(sha, 2, f"ceil:job:{i}", WAIT_KEY, PAYLOAD_JSON, i)
    single = n_single / (time.perf_counter() - t0)

    t0 = time.perf_counter()
    for start in range(0, n_pipelined, depth):
        pipe = client.pipeline(transaction=False)
        for i in range(start, start + depth):
            pipe.evalsha(sha, 2, f"ceil:job:p{i}", WAIT_KEY, PAYLOAD_JSON, i)
        await pipe.execute()
    pipelined = n_pipelined / (time.perf_counter() - t0)
    await client.aclose()
    return {"python_single": single, "python_pipelined": pipelined, "hiredis": HIREDIS_AVAILABLE}


if __name__ == "__main__":
    url, n_single, n_pipe, depth = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    try:
        import uvloop

        result = uvloop.run(main(url, n_single, n_pipe, depth))
    except ImportError:
        result = asyncio.run(main(url, n_single, n_pipe, depth))
    print("@@RESULT@@ " + json.dumps(result), flush=True)
