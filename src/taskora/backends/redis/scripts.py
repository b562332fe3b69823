"""Lua scripts: sources in ``lua/*.lua``, run by SHA with transparent NOSCRIPT recovery.

Scripts are content-addressed (EVALSHA) rather than a Functions library, so two versions of
taskora can run side by side during a rolling deploy. ``lib.lua`` holds helpers shared by the
per-task scripts; it is prepended to each of them.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from importlib import resources
from typing import Any

from .resp import ReplyError, RespClient

__all__ = ["SCRIPTS", "Script"]

log = logging.getLogger("taskora.redis")


class Script:
    __slots__ = ("name", "sha", "source")

    def __init__(self, name: str, source: str) -> None:
        self.name = name
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    async def __call__(self, client: RespClient, keys: Sequence[str], args: Sequence[Any]) -> Any:
        try:
            return await client.execute("EVALSHA", self.sha, len(keys), *keys, *args)
        except ReplyError as exc:
            if exc.code == "NOSCRIPT":  # the server restarted, or SCRIPT FLUSH ran
                await client.execute("SCRIPT", "LOAD", self.source)
                return await client.execute("EVALSHA", self.sha, len(keys), *keys, *args)
            if exc.code != "WRONGTYPE" or self.name == "repair" or len(keys) != 12:
                raise
        # A structural key of the task holds foreign data: move it aside, then run again.
        moved = await SCRIPTS["repair"](client, keys, [])
        log.error("taskora: moved malformed keys aside: %s", [m.decode() for m in moved])
        return await client.execute("EVALSHA", self.sha, len(keys), *keys, *args)


def _load() -> dict[str, Script]:
    """Every ``lua/<name>.lua`` becomes SCRIPTS[name]; lib.lua is prepended to the per-task
    scripts, not to the handshake (on the meta key) nor to ``schedule_*`` (on the schedule
    keys), which run outside any task."""
    folder = resources.files(__package__).joinpath("lua")
    sources = {
        entry.name.removesuffix(".lua"): entry.read_text()
        for entry in folder.iterdir()
        if entry.name.endswith(".lua")
    }
    lib = sources.pop("lib")
    alone = ("handshake", "schedule_")
    return {
        name: Script(name, source if name.startswith(alone) else lib + "\n" + source)
        for name, source in sorted(sources.items())
    }


SCRIPTS = _load()
