"""A worker process of one task version, for the rolling-deploy test (tests/test_versions.py).

Usage: python -m tests.procs.version_procs <url> <prefix> <version>
Version 1 runs payload version 1 as is; version 2 migrates version 1 payloads
(``migrated``). Each result names the worker's version; runs until SIGTERM.
"""

from __future__ import annotations

import sys
from typing import Any

import taskora


def main(url: str, prefix: str, version: int) -> None:
    app = taskora.App(url, prefix=prefix)
    migrate = [lambda d: {**d, "migrated": True}] if version == 2 else None

    @app.task("deploy", version=version, migrate=migrate)
    async def deploy(data: dict[str, Any]) -> dict[str, Any]:
        return {"worker": version, "v": data["v"], "migrated": bool(data.get("migrated"))}

    print("ready", flush=True)
    app.run()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
