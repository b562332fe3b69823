"""The only module a producer and a worker share: contracts, no App, no handlers."""

from __future__ import annotations

import pydantic

import taskora


class Resize(pydantic.BaseModel):
    url: str
    width: int = 100


class Resized(pydantic.BaseModel):
    url: str
    pixels: int
    worker_pid: int


resize = taskora.define_task(
    "resize", input=Resize, output=Resized, retry=taskora.Retry(attempts=2, delay="50ms")
)
