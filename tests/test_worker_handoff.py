"""The hand-off between the claim side and the execution side, driven through its public
methods with no backend and no event loop (``src/taskora/handoff.py``,
``docs/design.md#claim-ahead``)."""

from __future__ import annotations

from taskora.backends.base import Claimed, Outcome
from taskora.handoff import Handoff, Slot, SlotState


def _job(n: int, *, reserved: bool = True) -> Claimed:
    return Claimed(f"j{n}", "null", 1, 1, 0, f"t{n}", reserved=reserved)


def _sent(slots: Handoff[None]) -> list[tuple[str, str]]:
    return [(o.id, o.kind) for o in slots.drain_outgoing()]


def _done(slot: Slot[None]) -> Outcome:
    return Outcome(slot.id, slot.job.token, "completed", result="null")


def _start_all(slots: Handoff[None]) -> list[Slot[None]]:
    started = []
    while (slot := slots.start_next()) is not None:
        started.append(slot)
    return started


def test_buffer_starts_in_claim_order_up_to_the_concurrency() -> None:
    changes: list[int] = []
    slots: Handoff[None] = Handoff(2, lambda: changes.append(1))
    slots.reserve([_job(1, reserved=False), _job(2), _job(3), _job(4)])
    assert slots.free == 0
    started = _start_all(slots)
    assert [s.id for s in started] == ["j1", "j2"]
    assert all(s.state is SlotState.RUNNING for s in started)
    assert [s.id for s in slots.buffered] == ["j3", "j4"]
    # only a reserved job records a start; a job claimed for a free slot is active already
    assert _sent(slots) == [("j2", "start")]
    assert changes  # the claim side was woken to send it


def test_outcomes_go_out_as_finish_n_then_start_n_plus_1() -> None:
    slots: Handoff[None] = Handoff(1)
    slots.reserve([_job(1), _job(2), _job(3)])
    (first,) = _start_all(slots)
    assert slots.report(first, _done(first))
    (second,) = _start_all(slots)
    assert slots.report(second, _done(second))
    _start_all(slots)
    assert _sent(slots) == [
        ("j1", "start"),
        ("j1", "completed"),
        ("j2", "start"),
        ("j2", "completed"),
        ("j3", "start"),
    ]
    assert first.state is SlotState.REPORTED
    assert not slots.report(first, _done(first))  # a second report is ignored
    assert _sent(slots) == []


def test_give_back_releases_the_buffer_last_first_so_the_queue_keeps_its_order() -> None:
    slots: Handoff[None] = Handoff(1)
    slots.reserve([_job(1), _job(2), _job(3), _job(4)])
    _start_all(slots)
    _sent(slots)
    buffered = slots.buffered
    assert slots.give_back() == 3
    # each release goes to the front of the queue: j4 first, then j3, then j2 ahead of them
    assert _sent(slots) == [("j4", "release"), ("j3", "release"), ("j2", "release")]
    assert [s.state for s in buffered] == [SlotState.RELEASED] * 3
    assert slots.buffered == [] and slots.free == 0 and len(slots.running) == 1
    assert slots.give_back() == 0


def test_revoked_start_stops_the_handler_and_drops_its_outcome() -> None:
    slots: Handoff[None] = Handoff(2)
    slots.reserve([_job(1), _job(2)])
    one, two = _start_all(slots)
    _sent(slots)
    stop = slots.revoke(["j2", "unknown"])
    assert stop == [two] and two.state is SlotState.REVOKED
    assert slots.revoke(["j2"]) == []  # stopped once
    assert slots.report(two, Outcome("j2", "t2", "release"))
    assert two.state is SlotState.DROPPED
    assert slots.report(one, _done(one))
    assert _sent(slots) == [("j1", "completed")]  # nothing for the revoked job
    assert slots.free == 2


def test_a_refused_stale_outcome_does_not_stop_the_job_claimed_again() -> None:
    """j1 was lost to a stall and claimed here again (token t9): the refusal of its old
    outcome (token t1), answered after the new claim, stops nothing; a refusal of the new
    claim's own outcome does."""
    slots: Handoff[None] = Handoff(1)
    slots.reserve([Claimed("j1", "null", 1, 1, 0, "t9")])
    (again,) = _start_all(slots)
    stale = Outcome("j1", "t1", "completed", result="null")
    assert slots.revoke(["j1"], [stale]) == []
    assert again.state is SlotState.RUNNING
    own = Outcome("j1", "t9", "start")
    assert slots.revoke(["j1"], [own]) == [again]
    assert again.state is SlotState.REVOKED


def test_cancel_of_buffered_and_running_jobs() -> None:
    slots: Handoff[None] = Handoff(1)
    slots.reserve([_job(1), _job(2), _job(3, reserved=False)])
    (running,) = _start_all(slots)
    _sent(slots)
    reserved, claimed = slots.buffered
    # a reserved job: the backend ended it already; it just leaves the buffer
    assert slots.cancel("j2") is None
    assert reserved.state is SlotState.CANCELLED
    assert _sent(slots) == []
    # a job claimed active but never started: cancelled as it is
    assert slots.cancel("j3") is None
    assert claimed.state is SlotState.CANCELLED
    assert _sent(slots) == [("j3", "cancelled")]
    assert slots.buffered == []
    # a running job: returned once, for its handler to be stopped; its outcome still counts
    assert slots.cancel("j1") is running and running.cancel_requested
    assert slots.cancel("j1") is None
    assert slots.report(running, Outcome("j1", "t1", "cancelled"))
    assert _sent(slots) == [("j1", "cancelled")]


def test_lost_reservation_is_dropped_without_an_outcome() -> None:
    slots: Handoff[None] = Handoff(1)
    slots.reserve([_job(1), _job(2)])
    _start_all(slots)
    _sent(slots)
    (lost,) = slots.buffered
    assert slots.drop("j2") and lost.state is SlotState.DROPPED
    assert not slots.drop("j2")
    assert _sent(slots) == [] and slots.free == 0


def test_stop_gives_the_buffer_back_and_lets_running_jobs_report() -> None:
    slots: Handoff[None] = Handoff(2)
    slots.reserve([_job(1), _job(2), _job(3), _job(4)])
    one, two = _start_all(slots)
    _sent(slots)
    slots.stop()
    assert slots.stopping and slots.free == 0
    assert _sent(slots) == [("j4", "release"), ("j3", "release")]
    assert slots.report(one, _done(one))
    assert slots.start_next() is None  # no more starts once stopping
    slots.reserve([_job(5)])  # a wait in flight claimed one just now
    assert slots.start_next() is None
    slots.give_back()
    assert slots.report(two, Outcome("j2", "t2", "release"))
    assert _sent(slots) == [("j1", "completed"), ("j5", "release"), ("j2", "release")]
    assert slots.running == [] and slots.buffered == []


def test_a_failed_call_puts_its_outcomes_back_in_front() -> None:
    slots: Handoff[None] = Handoff(1)
    slots.reserve([_job(1), _job(2)])
    (first,) = _start_all(slots)
    lost = slots.drain_outgoing()
    slots.report(first, _done(first))
    slots.put_back(lost)
    assert [(o.id, o.kind) for o in slots.drain_outgoing()] == [
        ("j1", "start"),
        ("j1", "completed"),
    ]
    assert not slots.has_outgoing


def test_outcomes_of_jobs_in_flight_hold_back_the_rest_in_order() -> None:
    """A second call in flight carries only the outcomes before the first one of a job
    whose outcome is still in the first call; the rest stay, in order, for a later call."""
    slots: Handoff[None] = Handoff(3)
    slots.reserve([_job(1), _job(2), _job(3)])
    one, two, three = _start_all(slots)
    assert _sent(slots) == [("j1", "start"), ("j2", "start"), ("j3", "start")]
    slots.report(two, _done(two))
    slots.report(one, _done(one))
    slots.report(three, _done(three))
    held = {"j1"}  # j1's start is in a call that has not answered yet
    assert [(o.id, o.kind) for o in slots.drain_outgoing(held)] == [("j2", "completed")]
    assert [(o.id, o.kind) for o in slots.drain_outgoing(held)] == []
    assert _sent(slots) == [("j1", "completed"), ("j3", "completed")]
    assert not slots.has_outgoing
