"""The hand-off between a worker's claim side and its execution side.

Every job a worker holds is one :class:`Slot` here, and this is the only place that holds
them; the claim side (``claimer.py``) and the execution side (``executor.py``) change a
job's state only through these methods, so the rules of ``docs/design.md#claim-ahead`` are
written once:

    reserved --start_next()--> running --report()--> reported (its outcome goes out)
        |                         |  \\--revoke()--> revoked --report()--> dropped
        |                         \\--cancel()----> running, cancel requested (handler stopped)
        |--give_back()-----------> released (a ``release`` outcome, to the front, in order)
        |--cancel()--------------> cancelled (reserved: already ended by Redis; a claimed,
        |                                     never-started job: a ``cancelled`` outcome)
        \\--drop()---------------> dropped (the reservation was lost)

Outcomes leave in the order they were recorded (``drain_outgoing()``), so a finish and the
start of the job that took its slot ride one call as "finish N, start N+1". The class does
no I/O and awaits nothing: ``on_change`` tells the claim side there is something to send.
"""

from __future__ import annotations

import collections
import enum
from collections.abc import Callable, Container, Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

from .backends.base import Claimed, Outcome

__all__ = ["Handoff", "Slot", "SlotState"]

R = TypeVar("R")


class SlotState(enum.Enum):
    RESERVED = "reserved"  # claimed (ahead, or while stopping), not started
    RUNNING = "running"
    REVOKED = "revoked"  # running, but its start was refused: not ours, outcome dropped
    REPORTED = "reported"
    RELEASED = "released"
    CANCELLED = "cancelled"
    DROPPED = "dropped"


@dataclass(eq=False, slots=True)
class Slot(Generic[R]):
    """One job held by the worker. ``run`` is the execution side's handle on its handler."""

    job: Claimed
    state: SlotState = SlotState.RESERVED
    cancel_requested: bool = False
    run: R | None = None

    @property
    def id(self) -> str:
        return self.job.id


class Handoff(Generic[R]):
    """The jobs a worker holds (buffered and running) and the outcomes waiting to be sent."""

    def __init__(self, concurrency: int, on_change: Callable[[], None] = lambda: None):
        self.concurrency = concurrency
        self._on_change = on_change
        self._buffer: collections.deque[Slot[R]] = collections.deque()
        self._running: dict[str, Slot[R]] = {}
        self._outgoing: list[Outcome] = []
        self._stopping = False

    # -- views ------------------------------------------------------------------------
    @property
    def buffered(self) -> list[Slot[R]]:
        """Claimed, not started, in start order."""
        return list(self._buffer)

    @property
    def has_buffered(self) -> bool:
        return bool(self._buffer)

    @property
    def buffered_count(self) -> int:
        return len(self._buffer)

    @property
    def running(self) -> list[Slot[R]]:
        return list(self._running.values())

    def get(self, job_id: str) -> Slot[R] | None:
        """The running slot of ``job_id``, if any."""
        return self._running.get(job_id)

    @property
    def stopping(self) -> bool:
        return self._stopping

    @property
    def free(self) -> int:
        """Slots neither running nor about to be filled from the buffer (0 once stopping)."""
        if self._stopping:
            return 0
        return max(0, self.concurrency - len(self._running) - len(self._buffer))

    @property
    def has_outgoing(self) -> bool:
        return bool(self._outgoing)

    # -- claim side -------------------------------------------------------------------
    def reserve(self, jobs: Iterable[Claimed]) -> None:
        """Jobs just claimed join the buffer, behind the ones already there."""
        self._buffer.extend(Slot(job) for job in jobs)

    def start_next(self) -> Slot[R] | None:
        """Move the next buffered job into a free slot (a reserved one records its
        ``start`` outcome now); None when no slot is free or nothing is buffered."""
        if self._stopping or not self._buffer or len(self._running) >= self.concurrency:
            return None
        slot = self._buffer.popleft()
        slot.state = SlotState.RUNNING
        self._running[slot.id] = slot
        if slot.job.reserved:  # claimed ahead: it becomes active in the next call, in order
            self._push(Outcome(slot.id, slot.job.token, "start"))
        return slot

    def give_back(self) -> int:
        """Release every buffered job to the front of the queue, keeping their order (the
        last one is released first). Returns how many."""
        count = 0
        while self._buffer:
            slot = self._buffer.pop()
            slot.state = SlotState.RELEASED
            self._outgoing.append(Outcome(slot.id, slot.job.token, "release"))
            count += 1
        if count:
            self._on_change()
        return count

    def drain_outgoing(self, held: Container[str] = ()) -> list[Outcome]:
        """The outcomes recorded so far, in order, up to the first one of a job in ``held``
        (jobs with an outcome in a call still in flight: a job's outcomes apply in order
        whatever becomes of that call); the rest stay, in order."""
        outgoing = self._outgoing
        if held:
            for i, outcome in enumerate(outgoing):
                if outcome.id in held:
                    self._outgoing = outgoing[i:]
                    return outgoing[:i]
        self._outgoing = []
        return outgoing

    def put_back(self, outcomes: list[Outcome]) -> None:
        """Outcomes whose call failed go out first next time."""
        self._outgoing[:0] = outcomes

    def revoke(self, refused: Iterable[str], sent: Iterable[Outcome] = ()) -> list[Slot[R]]:
        """Refused starts: those jobs are not ours any more. Returns the running slots whose
        handler must be stopped; their outcome will be dropped.

        ``sent``: the outcomes of the call that was refused. A refusal then stops only the
        claim it was made for (same token): a stale outcome of a job lost to a stall, refused
        after the job was claimed again here (calls retried after a lost connection may run
        in another order), must not stop the new run."""
        tokens = {o.id: o.token for o in sent}
        stop = []
        for job_id in refused:
            slot = self._running.get(job_id)
            if slot is None or slot.state is not SlotState.RUNNING:
                continue
            if tokens and tokens.get(job_id) != slot.job.token:
                continue
            slot.state = SlotState.REVOKED
            stop.append(slot)
        return stop

    def cancel(self, job_id: str) -> Slot[R] | None:
        """A cancel arrived for ``job_id``. A buffered job leaves the buffer; a running one
        is returned (once) for its handler to be stopped."""
        for slot in self._buffer:
            if slot.id == job_id:
                self._buffer.remove(slot)
                slot.state = SlotState.CANCELLED
                if not slot.job.reserved:  # active but never started: cancelled as it is
                    self._push(Outcome(slot.id, slot.job.token, "cancelled"))
                return None  # claimed ahead: the cancel ended it already
        running = self._running.get(job_id)
        if running is None or running.cancel_requested:
            return None
        running.cancel_requested = True
        return running

    def drop(self, job_id: str) -> bool:
        """A buffered reservation was lost (cancelled or given back elsewhere): forget it."""
        for slot in self._buffer:
            if slot.id == job_id:
                self._buffer.remove(slot)
                slot.state = SlotState.DROPPED
                return True
        return False

    def stop(self) -> None:
        """No more starts; the buffer goes back to the queue."""
        self._stopping = True
        self.give_back()
        self._on_change()

    # -- execution side -----------------------------------------------------------------
    def report(self, slot: Slot[R], outcome: Outcome) -> bool:
        """The job's handler is done: record its outcome (dropped if revoked). False if the
        slot had already left (reported twice)."""
        if self._running.get(slot.id) is not slot:
            return False
        del self._running[slot.id]
        if slot.state is SlotState.REVOKED:
            slot.state = SlotState.DROPPED
        else:
            slot.state = SlotState.REPORTED
            self._outgoing.append(outcome)
        self._on_change()
        return True

    def _push(self, outcome: Outcome) -> None:
        self._outgoing.append(outcome)
        self._on_change()
