"""Bootstrap one virtualenv per library (peers pin conflicting `redis` versions), plus a base venv.

A venv is reused while its stamp (requirements, interpreter, the editable project's pyproject) is
unchanged.
Failures are returned as text, never raised: the report shows them.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import venv
from dataclasses import dataclass, field
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent.parent
STAMP = ".bench-stamp.json"


@dataclass
class Venv:
    name: str
    python: Path | None = None
    error: str | None = None
    versions: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.python is not None and self.error is None


def venv_dir(name: str) -> Path:
    return BENCH_DIR / f".venv-{name}"


def _stamp(requirements: list[str], editable: str | None) -> dict:
    # The base interpreter, not sys.executable: `python run.py` and `.venv/bin/python run.py`
    # (make bench) build the same venvs.
    base = os.path.realpath(getattr(sys, "_base_executable", sys.executable))
    stamp: dict = {"python": sys.version, "interpreter": base, "requirements": requirements}
    if editable:
        pyproject = Path(editable) / "pyproject.toml"
        digest = hashlib.sha256(pyproject.read_bytes()).hexdigest() if pyproject.exists() else None
        stamp["editable"] = {"path": editable, "pyproject_sha256": digest}
    return stamp


def _tail(text: str, lines: int = 3) -> str:
    """The informative part of a pip log: the last exception/ERROR lines, else the last lines."""
    keep = [
        ln.strip()
        for ln in text.splitlines()
        if ln.strip()
        and "is ignored: it is neither a file" not in ln
        and not ln.startswith("[notice]")
    ]
    errors = [ln for ln in keep if re.match(r"^(\w+(Error|Exception)\b:?|ERROR:)", ln)]
    return " | ".join(errors[-1:] or keep[-lines:])[-600:]


def _installed_versions(python: Path, names: list[str]) -> dict[str, str]:
    out = subprocess.run(
        [str(python), "-m", "pip", "list", "--format=json", "--disable-pip-version-check"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    try:
        rows = json.loads(out.stdout)
    except json.JSONDecodeError:
        return {}
    wanted = {n.lower().replace("_", "-") for n in names}
    return {r["name"]: r["version"] for r in rows if r["name"].lower().replace("_", "-") in wanted}


def _req_name(req: str) -> str:
    for sep in "[=<>~! ":
        req = req.split(sep)[0]
    return req


def ensure(
    name: str,
    requirements: list[str],
    editable: str | None = None,
    log_dir: Path | None = None,
    force: bool = False,
    package: str | None = None,
) -> Venv:
    """Create/refresh `.venv-<name>` with `requirements` (+ `pip install -e editable`, whose
    distribution is `package`, default `name`)."""
    path = venv_dir(name)
    python = path / "bin" / "python"
    result = Venv(name)
    try:
        stamp = _stamp(requirements, editable)
    except OSError as exc:
        result.error = f"cannot read project: {exc}"
        return result
    stamp_file = path / STAMP
    names = [_req_name(r) for r in requirements]
    if editable:
        names.append(package or name)
    if not force and python.exists() and stamp_file.exists():
        try:
            if json.loads(stamp_file.read_text()) == stamp:
                result.python = python
                result.versions = _installed_versions(python, names)
                return result
        except (OSError, json.JSONDecodeError):
            pass
    log_lines: list[str] = []
    try:
        if not python.exists():
            venv.EnvBuilder(with_pip=True, clear=True).create(path)
        stamp_file.unlink(missing_ok=True)
        cmd = [
            str(python),
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "--upgrade",
            *requirements,
        ]
        if editable:
            if (
                not (Path(editable) / "pyproject.toml").exists()
                and not (Path(editable) / "setup.py").exists()
            ):
                result.error = f"install failed: {editable} has no pyproject.toml/setup.py yet"
                return result
            cmd += ["-e", editable]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        log_lines += [" ".join(cmd), proc.stdout, proc.stderr]
        if proc.returncode != 0:
            result.error = "install failed: " + _tail(proc.stdout + "\n" + proc.stderr)
            return result
        stamp_file.write_text(json.dumps(stamp, indent=1))
        result.python = python
        result.versions = _installed_versions(python, names)
    except subprocess.TimeoutExpired:
        result.error = "install failed: pip timed out after 900 s"
    except Exception as exc:
        result.error = f"install failed: {type(exc).__name__}: {exc}"
    finally:
        if log_dir is not None and log_lines:
            log_dir.mkdir(parents=True, exist_ok=True)
            (log_dir / f"venv-{name}.log").write_text("\n".join(log_lines))
    return result
