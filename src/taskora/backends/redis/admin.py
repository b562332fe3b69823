"""Operations on everything one prefix holds (the demo's and the test fixtures' clean-up)."""

from __future__ import annotations

from ..keys import root
from .resp import RespClient, parse_address

__all__ = ["delete_prefix"]


async def delete_prefix(url: str, prefix: str) -> int:
    """Delete every key under ``prefix`` (``taskora:<prefix>:*``); returns how many. Only for
    a prefix nothing else uses: it is a SCAN, not an atomic step."""
    client = RespClient(parse_address(url), "taskora-cleanup")
    removed = 0
    try:
        cursor, pattern = b"0", root(prefix) + ":*"
        while True:
            cursor, keys = await client.execute("SCAN", cursor, "MATCH", pattern, "COUNT", 500)
            for key in keys:  # one by one: keys of different tasks sit on different slots
                removed += await client.execute("DEL", key)
            if cursor in (b"0", "0"):
                return removed
    finally:
        await client.close()
