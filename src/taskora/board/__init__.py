"""The web board: ``create_board(app)`` is a Starlette ASGI app with pages for the queues,
jobs, schedules, workflows, dead letters and payload versions, a JSON API and live updates
over SSE (docs/design.md#board). Needs the ``taskora[board]`` extra; ``import taskora``
never loads it."""

from __future__ import annotations

from .redact import Redactor
from .serve import serve
from .server import create_board

__all__ = ["Redactor", "create_board", "serve"]
