"""Schedule storage for the memory backend: what ``redis/lua/schedule_*.lua`` do, each in one
synchronous call, with "now" taken from the backend's clock (a virtual clock works)."""

from __future__ import annotations

from collections.abc import Callable

from .base import ScheduleExpect

__all__ = ["ScheduleStore"]


class ScheduleStore:
    def __init__(self, clock: Callable[[], int]) -> None:
        self.clock = clock
        self.records: dict[str, str] = {}
        self.next: dict[str, int] = {}  # absent = paused
        self.lock_holder: tuple[str, int] | None = None  # (token, expiry ms)

    def _holder(self) -> str | None:
        held = self.lock_holder
        if held is None or self.clock() > held[1]:
            self.lock_holder = None
            return None
        return held[0]

    def lock(self, token: str, ttl_ms: int, release: bool) -> bool:
        holder = self._holder()
        if release:
            if holder == token:
                self.lock_holder = None
            return False
        if holder is None or holder == token:
            self.lock_holder = (token, self.clock() + ttl_ms)
            return True
        return False

    def due(self, token: str, limit: int) -> tuple[int, list[tuple[str, int, str]]] | None:
        if self._holder() != token:
            return None
        now = self.clock()
        ready = [(at, name) for name, at in self.next.items() if at <= now]
        if len(ready) > 1:
            ready.sort()
        del ready[limit:]
        return now, [(name, at, self.records.get(name, "")) for at, name in ready]

    def read(self, name: str | None) -> list[tuple[str, str, int | None]]:
        names = list(self.records) if name is None else [name] if name in self.records else []
        return [(n, self.records[n], self.next.get(n)) for n in names]

    def write(
        self, name: str, expect: ScheduleExpect, record: str | None, next_ms: int | None
    ) -> bool:
        if expect.record is not ScheduleExpect.ANY and self.records.get(name) != expect.record:
            return False
        if expect.next_ms is not ScheduleExpect.ANY and self.next.get(name) != expect.next_ms:
            return False
        if record is None:
            self.records.pop(name, None)
            self.next.pop(name, None)
            return True
        self.records[name] = record
        if next_ms is None:
            self.next.pop(name, None)
        else:
            self.next[name] = next_ms
        return True
