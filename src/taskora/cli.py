"""The `taskora` command line: `taskora worker module:app`, `taskora board`, `taskora demo`,
`taskora version`, and the operator's commands (`inspect`, `jobs`, `job`, `retry`, `cancel`,
`dead-letters`, `purge`: `cli_ops.py`).

Usage errors (a bad import string, a module or attribute that does not exist, an attribute
that is not a ``taskora.App``, unknown task names) print one line to stderr and exit with
status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from ._version import __version__
from .app import App
from .cli_ops import OPS_COMMANDS, add_ops_commands, duration_ms, non_negative, run_ops
from .errors import ConfigError, TaskoraError

__all__ = ["CLIError", "load_app", "main"]

USAGE_ERROR = 2


class CLIError(Exception):
    """A user mistake on the command line: reported in one line, exit status 2."""


def load_app(spec: str) -> App:
    """Import ``module:attribute`` (from the current directory too) and return the App there."""
    module_name, sep, attr_path = spec.partition(":")
    if not sep or not module_name or not attr_path:
        raise CLIError(
            f"invalid app {spec!r}: expected 'module:attribute', e.g. 'myproject.tasks:app'"
        )
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing == module_name or module_name.startswith(missing + "."):
            raise CLIError(f"cannot import {module_name!r}: no module named {missing!r}") from None
        raise  # the module exists but one of its own imports failed: show the traceback
    obj: object = module
    for part in attr_path.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise CLIError(f"module {module_name!r} has no attribute {attr_path!r}") from None
    if not isinstance(obj, App):
        raise CLIError(f"{spec!r} is a {type(obj).__name__}, not a taskora.App")
    return obj


def _task_names(app: App, raw: str | None) -> list[str] | None:
    if raw is None:
        return None
    names = [name.strip() for name in raw.split(",") if name.strip()]
    if not names:
        raise CLIError("--tasks needs at least one task name")
    unknown = [name for name in names if name not in app.tasks]
    if unknown:
        known = ", ".join(sorted(app.tasks)) or "none"
        raise CLIError(f"unknown task(s) {', '.join(unknown)}; registered: {known}")
    missing = [name for name in names if app.tasks[name].handler is None]
    if missing:
        raise CLIError(f"task(s) without a handler in this process: {', '.join(missing)}")
    return names


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def _configure_logging(level: str) -> None:
    """Only the CLI configures logging (the library never adds handlers): to stderr, unless
    the app's module set up logging itself; the level applies to taskora's loggers."""
    if not logging.getLogger().handlers:
        logging.basicConfig(
            stream=sys.stderr,
            level=logging.WARNING,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
    logging.getLogger("taskora").setLevel(level)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="taskora", description="taskora: a distributed task queue for Python on Redis."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    worker = sub.add_parser("worker", help="run workers for the tasks of an App")
    worker.add_argument(
        "app", metavar="module:app", help="where the App lives, e.g. proj.tasks:app"
    )
    worker.add_argument(
        "--concurrency", type=_positive, default=None, help="jobs at once per task (this process)"
    )
    worker.add_argument(
        "--tasks", default=None, metavar="A,B", help="run only these tasks (comma-separated)"
    )
    worker.add_argument(
        "--url", default=None, help="backend URL (default: the app's, else TASKORA_URL)"
    )
    worker.add_argument("--prefix", default=None, help="key prefix (default: the app's)")
    worker.add_argument(
        "--shutdown-timeout",
        type=duration_ms,
        default=None,
        metavar="DURATION",
        help="how long a stop waits for running jobs before they go back to the queue "
        "(default: the app's, 30s); a second SIGINT/SIGTERM stops at once",
    )
    worker.add_argument(
        "--prefetch",
        type=non_negative,
        default=None,
        metavar="N",
        help="how many quick jobs a worker claims ahead (default: the app's, 32; 0: none)",
    )
    worker.add_argument(
        "--metrics-port",
        type=non_negative,
        default=None,
        metavar="N",
        help="serve Prometheus metrics at http://HOST:N/metrics (needs taskora[metrics])",
    )
    worker.add_argument(
        "--metrics-host",
        default="127.0.0.1",
        metavar="HOST",
        help="address the metrics server binds (default 127.0.0.1)",
    )
    worker.add_argument(
        "--log-level",
        default="INFO",
        type=str.upper,
        choices=LOG_LEVELS,
        help="log level on stderr (default INFO)",
    )
    demo = sub.add_parser("demo", help="run a self-contained demo with a live display")
    demo.add_argument("--jobs", type=_positive, default=300, help="how many jobs (default 300)")
    board = sub.add_parser(
        "board",
        help="serve the web board (needs taskora[board])",
        description="Serve the web board under /board. Auth: set TASKORA_BOARD_PASSWORD; "
        "without it the board only listens on loopback.",
    )
    board.add_argument(
        "app", nargs="?", default=None, metavar="module:app", help="an App (optional)"
    )
    board.add_argument(
        "--url", default=None, help="backend URL (default: the app's, else TASKORA_URL)"
    )
    board.add_argument("--prefix", default=None, help="key prefix (default: the app's)")
    board.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)"
    )
    board.add_argument("--port", type=non_negative, default=8080, help="port (default 8080)")
    board.add_argument("--read-only", action="store_true", help="refuse every change")
    board.add_argument("--log-level", default="INFO", type=str.upper, choices=LOG_LEVELS)
    sub.add_parser("version", help="print the taskora version")
    add_ops_commands(sub)
    return parser


def _worker(args: argparse.Namespace) -> int:
    if args.url is not None:  # an App() without a URL in the module picks it up too
        os.environ["TASKORA_URL"] = args.url
    app = load_app(args.app)
    tasks = _task_names(app, args.tasks)
    if tasks is None and not any(t.handler is not None for t in app.tasks.values()):
        raise CLIError(f"{args.app!r} has no task handlers to run")
    try:
        app._retarget(args.url, args.prefix)
    except ConfigError as exc:
        raise CLIError(str(exc)) from None
    if args.prefetch is not None:
        app.prefetch = args.prefetch
    _configure_logging(args.log_level)
    if args.metrics_port is not None:
        _serve_metrics(app, args.metrics_port, args.metrics_host)
    shutdown = None if args.shutdown_timeout is None else args.shutdown_timeout / 1000
    app.run(tasks=tasks, concurrency=args.concurrency, shutdown_timeout=shutdown)
    return 0


def _serve_metrics(app: App, port: int, host: str) -> None:
    try:
        from .metrics import serve
    except ModuleNotFoundError as exc:
        if exc.name != "prometheus_client":
            raise
        raise CLIError(
            "--metrics-port needs prometheus-client: pip install 'taskora[metrics]'"
        ) from None
    try:
        serve(app, port, host)
    except OSError as exc:
        raise CLIError(f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}") from None


BOARD_PASSWORD_ENV = "TASKORA_BOARD_PASSWORD"


def _board(args: argparse.Namespace) -> int:
    import asyncio

    try:
        from .board import serve
        from .board.serve import check_bind
    except ModuleNotFoundError as exc:
        if exc.name not in ("starlette", "uvicorn"):
            raise
        raise CLIError(
            "the board needs starlette and uvicorn: pip install 'taskora[board]'"
        ) from None
    password = os.environ.get(BOARD_PASSWORD_ENV) or None
    try:
        check_bind(args.host, password)
    except ConfigError as exc:
        raise CLIError(str(exc)) from None
    if args.app is not None:
        if args.url is not None:
            os.environ["TASKORA_URL"] = args.url
        app = load_app(args.app)
        try:
            app._retarget(args.url, args.prefix)
        except ConfigError as exc:
            raise CLIError(str(exc)) from None
    else:
        url = args.url or os.environ.get("TASKORA_URL")
        if not url:
            raise CLIError("no backend: give module:app, --url redis://... or set TASKORA_URL")
        app = App(url, prefix=args.prefix)
    _configure_logging(args.log_level)
    logging.getLogger("taskora").info(
        "taskora board on http://%s:%d/board/%s",
        args.host if ":" not in args.host else f"[{args.host}]",
        args.port,
        " (read-only)" if args.read_only else "",
    )

    async def run() -> None:
        try:
            await serve(app, args.host, args.port, auth=password, read_only=args.read_only)
        finally:
            await app.close()

    try:
        asyncio.run(run())
    except OSError as exc:
        raise CLIError(
            f"cannot serve the board on {args.host}:{args.port}: {exc.strerror or exc}"
        ) from None
    except ConfigError as exc:
        raise CLIError(str(exc)) from None
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "worker":
            return _worker(args)
        if args.command == "board":
            return _board(args)
        if args.command == "demo":
            from .demo import run_demo

            return run_demo(jobs=args.jobs)
        if args.command in OPS_COMMANDS:
            return run_ops(args, load_app)
        if args.command == "version":
            print(f"taskora {__version__}")
            return 0
    except CLIError as exc:
        print(f"taskora: error: {exc}", file=sys.stderr)
        return USAGE_ERROR
    except TaskoraError as exc:  # e.g. Redis unreachable: the message names the address
        print(f"taskora: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    parser.print_help()
    return USAGE_ERROR


if __name__ == "__main__":
    raise SystemExit(main())
