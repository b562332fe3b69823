"""A scheduler process for the scheduling fault tests (it runs no worker).

Usage: python -m tests.mp.sched_proc <url> <prefix> <every> <on_missed> [--skew S] [--slow-arm S]
Prints its leader token on the first line. ``--skew`` fakes the host clock (time.time) by S
seconds; ``--slow-arm`` sleeps S seconds between dispatching a fire time and re-arming the
schedule, which widens the window a SIGKILL must hit to test decision 5.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time


def main(argv: list[str]) -> int:
    url, prefix, every, on_missed = argv[:4]
    options = dict(zip(argv[4::2], argv[5::2], strict=True))
    if "--skew" in options:
        real = time.time
        skew = float(options["--skew"])
        time.time = lambda: real() + skew  # what a host with a wrong clock reports

    import taskora

    app = taskora.App(url, prefix=prefix, scheduler=dict(poll_interval=0.1, lock_ttl=1.5))

    @app.task("beat")
    async def beat(data: object) -> None:
        return None

    app.schedule("beat-every", task=beat, every=float(every), on_missed=on_missed, overlap=True)

    async def run() -> None:
        if "--slow-arm" in options:
            pause = float(options["--slow-arm"])
            write = app.backend.schedule_write

            async def slow_write(*args: object, **kwargs: object) -> bool:
                await asyncio.sleep(pause)
                return await write(*args, **kwargs)  # type: ignore[arg-type]

            app.backend.schedule_write = slow_write  # type: ignore[method-assign]
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await app.start(tasks=[])
        assert app.scheduler is not None
        print(app.scheduler.token, flush=True)
        await stop.wait()
        await app.close()  # gives the leader lock up: another process takes over at once

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
