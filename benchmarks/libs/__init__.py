"""The libraries under benchmark: one adapter module per library, plus what each needs installed.

This module is imported by the orchestrator (plain stdlib Python) as well as by the adapters inside
their venvs, so it must stay import-free.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: Installed into every library venv (async adapters run on uvloop when it is importable).
COMMON_REQUIREMENTS = ["hiredis==3.5.0", "uvloop==0.23.0"]


@dataclass(frozen=True)
class Library:
    name: str  # CLI name, also the adapter module libs/<name>.py
    label: str  # shown in the report
    requirements: list[str] = field(default_factory=list)
    editable: str | None = None  # a local project installed with `pip install -e`
    notes: str = ""  # how the adapter drives it, where that departs from defaults
    module: str = ""  # the adapter libs/<module>.py (default: name)

    @property
    def adapter(self) -> str:
        return self.module or self.name

    @property
    def venv(self) -> str:
        """The venv's name: benchmarks/.venv-<venv>."""
        return self.name.replace("@", "-at-").replace("/", "_")


#: The repository these benchmarks belong to (so a checkout or worktree measures its own code).
TASKORA_SOURCE = __file__.rsplit("/", 3)[0]

LIBRARIES: dict[str, Library] = {
    lib.name: lib
    for lib in [
        Library(
            "taskora",
            "taskora",
            editable=TASKORA_SOURCE,
            notes="`App(url)`, `@app.task(concurrency=N)`; worker via `async with app:`; "
            "process c=1 strict: `App(url, prefetch=0)` (no claim-ahead)",
        ),
        # saq imports typing_extensions without declaring it
        Library(
            "saq",
            "SAQ",
            ["saq[redis]==0.26.4", "typing_extensions"],
            notes="round trip: `queue.listen()` (pub/sub) subscribed before the enqueue; "
            "`apply()` would poll every 0.5 s",
        ),
        Library(
            "arq",
            "arq",
            ["arq==0.28.0"],
            notes="worker `poll_delay` and `job.result(poll_delay=)` lowered to 10 ms "
            "(default 0.5 s)",
        ),
        Library(
            "rq",
            "RQ",
            ["rq==2.12.0"],
            notes="`SimpleWorker` (in-process, one job at a time: RQ has no in-process "
            "concurrency, so c=100 runs at c=1); bulk = `enqueue_many`",
        ),
        Library(
            "bullmq",
            "bullmq (Python)",
            ["bullmq==3.4.4"],
            notes="bulk = `addBulk`; round trip waits on `QueueEvents` (`completed:<id>`), "
            "the port has no `waitUntilFinished`",
        ),
        Library(
            "taskiq",
            "taskiq + taskiq-redis",
            ["taskiq==0.13.0", "taskiq-redis==1.2.4"],
            notes="`RedisStreamBroker`; worker = `run_receiver_task(max_async_tasks=N)`; "
            "`wait_result(check_interval=)` lowered to 10 ms (default 0.2 s)",
        ),
        Library(
            "celery",
            "Celery",
            ["celery[redis]==5.7.0"],
            notes="worker `--pool threads -c N` (one process), without mingle/gossip/heartbeat; "
            "Redis result backend only for the round trip",
        ),
        Library(
            "dramatiq",
            "Dramatiq",
            ["dramatiq[redis]==2.2.1"],
            notes="`dramatiq.Worker(worker_threads=N)` in one process; `Results` middleware "
            "only for the round trip",
        ),
        Library(
            "streaq",
            "streaq",
            ["streaq==7.2.0"],
            notes="defaults; bulk = `enqueue_many`; each result wait opens a pub/sub context "
            "whose exit waits coredis's 0.1 s unsubscribe timeout",
        ),
    ]
}


def library(name: str) -> Library:
    """A library by CLI name; ``taskora@PATH`` is another taskora checkout (A/B in one run)."""
    base, at, path = name.partition("@")
    if not at:
        return LIBRARIES[name]
    if base != "taskora" or not path:
        raise KeyError(name)
    path = path.rstrip("/")
    return Library(
        name,
        f"taskora@{path.rsplit('/', 1)[-1]}",
        editable=path,
        notes=f"the taskora checkout at {path}, driven like taskora",
        module="taskora",
    )


#: The venv the harness itself uses for the ceiling probe (redis-py asyncio + hiredis) and the plot.
BASE_REQUIREMENTS = ["redis==8.1.0", "hiredis==3.5.0", "uvloop==0.23.0", "matplotlib==3.11.2"]
