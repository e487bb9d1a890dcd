"""A producer process for cross-process tests: an object store and server in its own process.

Commands arrive as JSON lines on stdin, answers leave as JSON lines on stdout:
``{"put": size, "pulls": n|null, "ttl": s}`` → ``{"token": ..., "sha256": ...}``,
``{"stats": true}`` → the store's and server's counters. It exits when stdin closes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import os
import sys

from xdt import KeyRing, ObjectServer, ObjectStore, StoreConfig


async def main() -> None:
    loop = asyncio.get_running_loop()
    store = ObjectStore(StoreConfig(quota_bytes=2 << 30))
    async with ObjectServer(store, KeyRing.from_env()) as server:
        print(json.dumps({"address": server.address}), flush=True)
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line:
                return
            command = json.loads(line)
            if "put" in command:
                data = os.urandom(command["put"])
                obj = await store.put(data, pulls=command.get("pulls", 1), ttl=command.get("ttl"))
                answer = {"token": server.seal(obj), "sha256": hashlib.sha256(data).hexdigest()}
                del data
            else:
                answer = {
                    "store": dataclasses.asdict(store.stats),
                    "server": dataclasses.asdict(server.stats),
                }
            print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
