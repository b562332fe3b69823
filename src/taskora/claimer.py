"""The claim side of a worker: the one loop that talks to the backend about jobs.

Each pass sends every outcome recorded in the hand-off since the last pass together with a
claim for the free slots, as one backend call (one Lua script on Redis): at concurrency 1
that is one round trip per job, and at concurrency 100 one round trip finishes and replaces
dozens of jobs. When nothing is claimable the loop blocks on the backend's wake-up
(``BZPOPMIN`` on Redis), never polling, while outcomes of running jobs still go out at once.

Claim-ahead (``docs/design.md#claim-ahead``): while jobs are quick (under QUICK_JOB_S on
average) the claim also asks for about PREFETCH_S of work beyond the free slots (at most
``prefetch`` jobs). Those are reserved; the hand-off starts them as slots free and records
their ``start`` outcomes, which ride the next finish call in order (finish N, start N+1).

Two calls in flight (``_overlap``): a busy worker does not wait for one finish call's reply
before sending the next. Each call claims for at most half the slots, so while Redis runs
one call the worker runs the jobs of the other, and the two processes work side by side
instead of in turn (concurrency 100, no-op jobs: about 1.4x the jobs/s). The second call
carries only outcomes of jobs with none in the first (``Handoff.drain_outgoing``), so a
job's outcomes apply in order whichever call fails, is retried or answers first. A failed
call waits out no backoff while the call behind it is in flight (the jobs that call claimed
would wait with it, and lose their locks), and a refusal stops a running job only if it
was made for that job's own claim (``Handoff.revoke`` matches the token).
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from .backends.base import Backend, Claimed, ClaimOptions, FinishReport, Outcome
from .errors import BackendError
from .handoff import Handoff, Slot

__all__ = ["IDLE_BLOCK_S", "PREFETCH_S", "QUICK_JOB_S", "Claimer", "Signal"]

log = logging.getLogger("taskora.worker")

IDLE_BLOCK_S = 2.0
QUICK_JOB_S = 0.005  # jobs faster than this on average are prefetched ...
PREFETCH_S = 0.02  # ... up to about this much work ahead of the free slots


class Signal:
    """A cheap wake-up for the claim loop (an asyncio.Event costs a task per wait here)."""

    __slots__ = ("_future", "_set")

    def __init__(self) -> None:
        self._set = False
        self._future: asyncio.Future[None] | None = None

    def set(self) -> None:
        self._set = True
        future = self._future
        if future is not None and not future.done():
            future.set_result(None)

    def set_from(self, _: object) -> None:
        self.set()

    def clear(self) -> None:
        self._set = False

    async def wait(self) -> None:
        if self._set:
            return
        self._future = asyncio.get_running_loop().create_future()
        try:
            await self._future
        finally:
            self._future = None


@dataclass(slots=True)
class _Sent:
    """A finish call in flight: what it carries and claims."""

    reply: Awaitable[FinishReport]
    outcomes: list[Outcome]
    free: int
    room: int


class Claimer:
    """Sends outcomes, claims jobs into the hand-off, and waits for work when idle."""

    def __init__(
        self,
        name: str,
        backend: Backend,
        slots: Handoff[Any],
        wake: Signal,
        claim: ClaimOptions,
        token_base: str,
        prefetch: int,
        fill: Callable[[], None],
        revoked: Callable[[list[Slot[Any]]], None],
    ):
        self.name = name
        self.backend = backend
        self.slots = slots
        self.wake = wake
        self.prefetch = prefetch
        self.avg_run_s = float("inf")  # moving average of how long a job takes here
        self._claim = claim
        self._token_base = token_base
        self._fill = fill
        self._revoked = revoked
        self._waiter: asyncio.Future[tuple[Claimed, ...]] | None = None
        self._waiter_want = 0
        self._idle_expected = False  # the last claim found the queue empty
        self._backoff = 0.05
        self._next: _Sent | None = None  # a second call, sent while the current one ran

    # -- pace ---------------------------------------------------------------------------
    def note_run(self, seconds: float) -> None:
        avg = self.avg_run_s
        self.avg_run_s = seconds if avg == float("inf") else 0.8 * avg + 0.2 * seconds

    def quick(self) -> bool:
        return self.avg_run_s < QUICK_JOB_S

    def prefetch_room(self) -> int:
        """While jobs are quick, claim up to about PREFETCH_S of work ahead of the free
        slots (at most ``prefetch`` jobs): those jobs start the moment a slot frees, and one
        round trip finishes and replaces a batch of them instead of one. Slow jobs are never
        held back from other workers this way (nothing is prefetched once a job takes
        QUICK_JOB_S or more).

        A worker with at least ``prefetch`` slots claims nothing ahead: the batch it claims
        for its free slots keeps it busy through the next finish call already, and a job
        reserved ahead costs Redis two writes of its state instead of one (at concurrency
        100: 19 commands a job instead of 16, for the same jobs/s)."""
        slots = self.slots
        if slots.stopping or self.prefetch <= slots.concurrency or not self.quick():
            return 0
        target = min(self.prefetch, max(1, int(PREFETCH_S / max(self.avg_run_s, 1e-6))))
        return max(0, target - slots.buffered_count)

    def hold_check(self, slot: Slot[Any]) -> None:
        """A job turned out slow while others wait claimed ahead behind it: give them back,
        so another worker (or a higher-priority job that arrived since) goes first."""
        if self.slots.get(slot.id) is slot and self.slots.has_buffered:
            self.avg_run_s = max(self.avg_run_s, 2 * PREFETCH_S)  # no prefetch for now
            self.slots.give_back()

    # -- the loop -------------------------------------------------------------------------
    async def run(self) -> None:
        try:
            while await self._pass():
                pass
        finally:
            sent, self._next = self._next, None
            if sent is not None and isinstance(sent.reply, asyncio.Future):
                sent.reply.cancel()  # cancelled mid-flight: lost with the first call
            await self._drop_waiter()

    def _take(self, claimed: tuple[Claimed, ...]) -> int:
        """Claimed jobs join the hand-off and start in free slots; returns the slots still
        free (a stopping worker gives them straight back)."""
        self.slots.reserve(claimed)
        if self.slots.stopping:
            self.slots.give_back()
        self._fill()
        return self.slots.free

    async def _pass(self) -> bool:
        """One turn: send outcomes and claim for the free slots; False when stopped."""
        self.wake.clear()
        slots = self.slots
        waiter = self._waiter
        if waiter is not None and waiter.done():  # it claimed work while we were busy
            self._waiter = None
            self.slots.reserve(_consume(waiter))
        free = self._take(())
        sent, self._next = self._next, None  # sent during the last pass: its reply is next
        if sent is not None and slots.running:
            # Let the jobs the last reply started take their first step first: quick ones
            # end in it, and their outcomes go out (the call after `sent`) before this
            # process turns to the reply, so Redis has work while we handle it.
            await asyncio.sleep(0)
        waiting = self._waiter is not None  # a wait in flight claims for the free slots
        if sent is None:
            if not slots.has_outgoing:
                if slots.stopping and not slots.running:
                    # a wait in flight may have claimed jobs just now: give those back first
                    return await self._drop_waiter() > 0
                if free <= 0 or waiting:
                    await self.wake.wait()
                    return True
            sent = self._send(free, waiting)
        try:
            report = await self._overlap(sent)
        except BackendError as exc:
            slots.put_back(sent.outcomes)
            log.warning("worker %s: backend unavailable (%s); retrying", self.name, exc)
            if self._next is None:  # else its reply first: jobs it claimed must not wait
                await asyncio.sleep(self._backoff)
                self._backoff = min(self._backoff * 2, 2.0)
            return True
        self._backoff = 0.05
        want = sent.free + sent.room
        if not waiting:
            self._idle_expected = len(report.claimed) < want
        self._revoked(slots.revoke(report.refused, sent.outcomes))
        free = self._take(report.claimed)
        if self._next is not None:
            return True  # its reply decides what comes next
        if slots.has_outgoing or slots.stopping or free <= 0:
            return True  # more to send, or the slots are full
        if not waiting and len(report.claimed) >= want:
            return True  # more may be waiting
        await self._idle(free)
        return True

    def _send(self, free: int, waiting: bool) -> _Sent:
        """The outcomes so far and a claim for the free slots (none while a wait in flight
        claims for them; half of them when the next call may claim the rest)."""
        room = 0 if waiting else self.prefetch_room()
        if waiting:
            free = 0
        elif self._may_overlap() and not self._idle_expected:
            free = min(free, (self.slots.concurrency + 1) // 2)
        outcomes = self.slots.drain_outgoing()
        return _Sent(self._finish(outcomes, free, room), outcomes, free, room)

    def _may_overlap(self) -> bool:
        """A second call may go out while one is in flight: a busy worker with more than one
        slot, no wait in flight (its claims would race the calls') and not stopping."""
        slots = self.slots
        return slots.concurrency > 1 and self._waiter is None and not slots.stopping

    async def _overlap(self, sent: _Sent) -> FinishReport:
        """Wait for ``sent``'s reply; meanwhile send the next call (once) as soon as there
        are outcomes it may carry, or free slots it may claim for while jobs keep coming."""
        if not self._may_overlap():
            return await sent.reply
        reply = sent.reply = asyncio.ensure_future(sent.reply)
        reply.add_done_callback(self.wake.set_from)
        slots = self.slots
        held: set[str] | None = None
        while True:
            if self._next is None and self._may_overlap():
                free = slots.free - sent.free
                free = 0 if self._idle_expected else min(free, (slots.concurrency + 1) // 2)
                if slots.has_outgoing or free > 0:
                    if held is None:
                        held = {o.id for o in sent.outcomes}
                    outcomes = slots.drain_outgoing(held)
                    if outcomes or free > 0:
                        room = max(0, self.prefetch_room() - sent.room)
                        call = self.backend.finish_and_claim(
                            self.name, outcomes, free, self._claim, self._token_base, room
                        )
                        self._next = _Sent(asyncio.ensure_future(call), outcomes, free, room)
            if reply.done():
                return reply.result()
            self.wake.clear()
            await self.wake.wait()

    def _finish(self, outcomes: list[Outcome], free: int, room: int) -> Awaitable[FinishReport]:
        """Send outcomes, claim ``free`` jobs to run now and ``room`` more ahead. A worker
        with quick jobs that found the queue empty last time sends its next blocking wait
        along with the finish, in one write."""
        if (
            outcomes
            and free > 0  # about to go idle (a wait for reservations alone would outlive
            # its use: it cannot claim a job that must not be claimed ahead)
            and self._idle_expected
            and self._waiter is None
            and not self.slots.stopping
            and self.quick()
        ):
            sent = self.backend.finish_then_wait(
                self.name, outcomes, free, self._claim, self._token_base, IDLE_BLOCK_S, room
            )
            if sent is not None:
                finished, self._waiter = sent
                self._waiter_want = free + room
                self._waiter.add_done_callback(self.wake.set_from)
                return finished
        return self.backend.finish_and_claim(
            self.name, outcomes, free, self._claim, self._token_base, room
        )

    async def _idle(self, free: int) -> None:
        """Free slots and nothing claimable: block until work arrives (it is claimed on
        arrival, by the wait itself) or a running job ends."""
        while True:
            if self._waiter is None:
                room = self.prefetch_room()
                self._waiter_want = free + room
                self._waiter = asyncio.create_task(
                    self.backend.wait_for_work(
                        self.name, IDLE_BLOCK_S, free, self._claim, self._token_base, room
                    )
                )
                self._waiter.add_done_callback(self.wake.set_from)
            if not self._waiter.done():
                await self.wake.wait()
                self.wake.clear()
                if not self._waiter.done():
                    return  # an outcome to send
            claimed = _consume(self._waiter)
            self._waiter = None
            self._idle_expected = len(claimed) < self._waiter_want
            free = self._take(claimed)
            slots = self.slots
            if slots.has_outgoing or slots.stopping or free <= 0:
                return
            if len(claimed) >= self._waiter_want:
                return
            if claimed and self.quick():
                # Quick jobs just started: their outcomes come in a moment, and that finish
                # re-arms the wait in the same write. Re-arm alone only if they linger.
                with contextlib.suppress(builtins.TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), 2 * PREFETCH_S)
                if slots.has_outgoing:
                    return
            # the queue is empty: block again at once

    async def _drop_waiter(self) -> int:
        """Stop a wait in flight; jobs it claimed go to the hand-off. Returns how many."""
        waiter, self._waiter = self._waiter, None
        if waiter is None:
            return 0
        waiter.cancel()
        with contextlib.suppress(BaseException):
            await waiter
        claimed = _consume(waiter)
        self._take(claimed)
        return len(claimed)


def _consume(task: asyncio.Future[tuple[Claimed, ...]]) -> tuple[Claimed, ...]:
    if task.cancelled():
        return ()
    exc = task.exception()
    if exc is not None:
        if not isinstance(exc, BackendError):
            log.warning("wait for work failed: %r", exc)
        return ()
    return task.result()
