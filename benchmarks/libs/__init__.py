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


TASKORA_SOURCE = "/work/main"

LIBRARIES: dict[str, Library] = {
    lib.name: lib
    for lib in [
        Library("taskora", "taskora", editable=TASKORA_SOURCE),
        # saq imports typing_extensions without declaring it
        Library("saq", "SAQ", ["saq[redis]==0.26.4", "typing_extensions"]),
        Library("arq", "arq", ["arq==0.28.0"]),
        Library("rq", "RQ", ["rq==2.12.0"]),
        Library("bullmq", "bullmq (Python)", ["bullmq==3.4.4"]),
        Library("taskiq", "taskiq + taskiq-redis", ["taskiq==0.13.0", "taskiq-redis==1.2.4"]),
        Library("celery", "Celery", ["celery[redis]==5.7.0"]),
        Library("dramatiq", "Dramatiq", ["dramatiq[redis]==2.2.1"]),
        Library("streaq", "streaq", ["streaq==7.2.0"]),
    ]
}

#: The venv the harness itself uses for the ceiling probe (redis-py asyncio + hiredis) and the plot.
BASE_REQUIREMENTS = ["redis==8.1.0", "hiredis==3.5.0", "uvloop==0.23.0", "matplotlib==3.11.2"]
