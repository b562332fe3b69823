"""Aggregate repetitions (median) and render the markdown report.

Ratios are taskora / peer. For throughput (jobs/s) above 1 means taskora is faster; for memory
(bytes per waiting job) below 1 means taskora stores less.
"""

from __future__ import annotations

from typing import Any

from . import stats
from .ceiling import FIGURES
from .workloads import WORKLOADS

SUBJECT = "taskora"


def is_peer(name: str) -> bool:
    """Another library (a second taskora checkout, `taskora@PATH`, is an A/B, not a peer)."""
    return name != SUBJECT and not name.startswith(SUBJECT + "@")


# taskora-only variants are compared with the peers' figure of the plain workload.
PEER_FIGURE = {"process_c1_strict": "process_c1"}
# Which Python ceiling each throughput workload is read against.
CEILING_FOR = {
    "enqueue_single": "python_single",
    "enqueue_bulk": "python_pipelined",
    "process_c1": "python_single",
    "process_c1_strict": "python_single",
    "process_c100": "python_pipelined",
    "round_trip": "relay",
    "round_trip_seq": "relay",
}
#: Client CPU per round trip (producer, worker process), beside the server's.
CPU_FIELDS = ("producer_cpu_us_per_job", "worker_cpu_us_per_job")
#: The per-job server figures of each timed section (libs/common.py ServerCost), in table order.
COST_FIELDS = ("commands_per_job", "scripts_per_job", "script_us_per_job", "cpu_us_per_job")


def aggregate(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median over the successful repetitions; failures are kept as text."""
    ok = [r for r in runs if r.get("status") == "ok"]
    failed = [r for r in runs if r.get("status") == "error"]
    out: dict[str, Any] = {
        "runs": [{k: v for k, v in r.items() if k != "latencies_ms"} for r in runs]
    }
    if ok:
        out.update(
            status="ok",
            value=stats.median([r["value"] for r in ok]),
            capped=any(r.get("capped") for r in ok),
            n=min(r.get("n", 0) for r in ok),
            n_planned=ok[0].get("n_planned"),
        )
        for key in ("p50_ms", "p95_ms", "p99_ms", *CPU_FIELDS):
            if ok[0].get(key) is not None:
                out[key] = stats.median([r[key] for r in ok])
        costs = [r["redis"] for r in ok if r.get("redis")]
        if costs:
            out["redis"] = {f: stats.median([c[f] for c in costs]) for f in COST_FIELDS}
            out["redis"]["calls_per_job"] = costs[len(costs) // 2].get("calls_per_job", {})
        if failed:
            out["warning"] = f"{len(failed)} of {len(runs)} runs failed: {failed[0].get('error')}"
    elif any(r.get("status") == "unsupported" for r in runs):
        out.update(
            status="unsupported",
            error=next(r["error"] for r in runs if r.get("status") == "unsupported"),
        )
    else:
        out.update(status="error", error=(failed[0].get("error") if failed else "not run"))
    return out


def compare(libraries: dict[str, Any]) -> dict[str, Any]:
    """taskora/peer ratios per workload, and taskora vs the fastest (or leanest) peer."""
    subject = libraries.get(SUBJECT, {}).get("workloads", {})
    ratios: dict[str, dict[str, float | None]] = {}
    best: dict[str, Any] = {}
    for key, wl in WORKLOADS.items():
        mine = subject.get(key, {})
        mine_v = mine.get("value") if mine.get("status") == "ok" else None
        candidates = []
        for name, lib in libraries.items():
            if name == SUBJECT:
                continue
            figure = key if not is_peer(name) else PEER_FIGURE.get(key, key)
            res = lib.get("workloads", {}).get(figure, {})
            peer_v = res.get("value") if res.get("status") == "ok" else None
            ratios.setdefault(name, {})[key] = (mine_v / peer_v) if (mine_v and peer_v) else None
            if peer_v and is_peer(name):
                candidates.append((peer_v, name))
        if candidates:
            value, name = (max if wl.higher_is_better else min)(candidates)
            best[key] = {
                "peer": name,
                "value": value,
                "ratio": (mine_v / value) if mine_v else None,
                "subject_status": mine.get("status", "not run"),
                "subject_error": mine.get("error"),
            }
    return {"ratios": ratios, "vs_best": best}


# ------------------------------------------------------------------------------------------------
# Markdown


def _num(v: float) -> str:
    return f"{v:,.0f}" if v >= 100 else f"{v:,.1f}" if v >= 10 else f"{v:,.2f}"


def _ratio(r: float | None) -> str:
    return "–" if r is None else f"{r:.2f}×"


class _Notes:
    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, text: str) -> str:
        if text not in self.items:
            self.items.append(text)
        return f"[{self.items.index(text) + 1}]"


def _cell(lib_label: str, key: str, res: dict[str, Any], notes: _Notes) -> str:
    status = res.get("status")
    title = WORKLOADS[key].title
    if status == "unsupported":
        return res.get("error", "n/a").split(" (")[0]
    if status != "ok":
        error = " ".join(str(res.get("error") or "not run").split())
        kind = "timeout" if error.startswith("timeout") else "error"
        return f"✗ {kind} " + notes.add(f"{lib_label}, {title}: {error}")
    text = _num(res["value"])
    if key in ("round_trip", "round_trip_seq"):
        p50, p95, p99 = res["p50_ms"], res["p95_ms"], res["p99_ms"]
        text = f"{text}/s · p50 {p50:.2f} / p95 {p95:.2f} / p99 {p99:.2f} ms"
    if res.get("capped"):
        text += " †" + notes.add(
            f"{lib_label}, {title}: time cap reached, measured over "
            f"{res['n']:,} of {res['n_planned']:,} jobs"
        )
    if res.get("warning"):
        text += " " + notes.add(f"{lib_label}, {title}: {res['warning']}")
    return text


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _header(meta: dict[str, Any]) -> list[str]:
    return [
        f"# taskora benchmarks — {meta['date']}",
        "",
        f"Machine: {meta['cpu_count']} CPUs ({meta.get('cpu_model', '?')}), "
        f"Python {meta['python']}, Redis {meta['redis_version']} on loopback (persistence off), "
        f"event loop {meta['event_loop']}. Mode: {meta['mode']}, median of {meta['repeat']} "
        "repetition(s); each library alone on fresh data; producers and workers in separate "
        f"processes. Run time {meta.get('duration_s', 0) / 60:.1f} min; 1-minute load average "
        f"{meta.get('loadavg_start', '?')} at the start, {meta.get('loadavg_end', '?')} at the end "
        "(other work on the machine skews every figure).",
        "",
    ]


def _results(libs: dict[str, Any], keys: list[str], notes: _Notes) -> list[str]:
    header = ["library", "version"] + [f"{WORKLOADS[k].title} ({WORKLOADS[k].unit})" for k in keys]
    lines = [
        "## Results",
        "",
        _row(header),
        "|" + "|".join(["---", "---"] + ["---:"] * len(keys)) + "|",
    ]
    for name, lib in libs.items():
        label = lib["label"]
        if lib.get("error"):
            error = " ".join(str(lib["error"]).split())
            kind = "install failed" if error.startswith("install failed") else "error"
            cells = [f"✗ {kind} {notes.add(f'{label}: {error}')}"] * len(keys)
        else:
            not_run = {"status": "error", "error": "not run"}
            results = [lib["workloads"].get(k, not_run) for k in keys]
            errors = {" ".join(str(r.get("error")).split()) for r in results}
            if all(r.get("status") == "error" for r in results) and len(errors) == 1:
                ref = notes.add(f"{label}, every workload: {errors.pop()}")
                cells = [f"✗ error {ref}"] * len(keys)
            else:
                cells = [_cell(label, k, r, notes) for k, r in zip(keys, results, strict=True)]
        shown = f"**{label}**" if name == SUBJECT else label
        lines.append(_row([shown, lib.get("version") or "?", *cells]))
    return [*lines, ""]


def _ratios(libs: dict[str, Any], comp: dict[str, Any], keys: list[str]) -> list[str]:
    if SUBJECT not in libs or len(libs) < 2:
        return []
    lines = [
        "## taskora / peer",
        "",
        "Throughput: above 1 = taskora faster. Round trip: ratio of jobs/s. "
        "Memory: below 1 = taskora stores less per job.",
        "",
        _row(["peer"] + [WORKLOADS[k].title for k in keys]),
        "|---|" + "|".join(["---:"] * len(keys)) + "|",
    ]
    for name, row in comp.get("ratios", {}).items():
        lines.append(_row([libs[name]["label"]] + [_ratio(row.get(k)) for k in keys]))
    cells = []
    for k in keys:
        best = comp.get("vs_best", {}).get(k)
        if not best:
            cells.append("–")
            continue
        peer = f"{libs[best['peer']]['label']} ({_num(best['value'])})"
        if best["ratio"] is None:
            cells.append(f"taskora {best['subject_status']}; best peer {peer}")
        else:
            cells.append(f"{_ratio(best['ratio'])} vs {peer}")
    lines.append(_row(["**taskora vs fastest peer**", *cells]))
    return [*lines, ""]


def _ceiling(libs: dict[str, Any], ceiling: dict[str, Any], keys: list[str]) -> list[str]:
    figs = ceiling.get("figures", {})
    if not figs:
        return []
    lines = [
        "## Ceiling (what the server allows)",
        "",
        "A tiny Lua script (one HSET + one ZADD) and plain commands, calls/s:",
        "",
        "| driver | calls/s |",
        "|---|---:|",
    ]
    for key, desc in FIGURES.items():
        if figs.get(key):
            p50 = figs.get(f"{key}_p50_ms")
            lines.append(f"| {desc} | {_num(figs[key])}{f' · p50 {p50:.2f} ms' if p50 else ''} |")
    lines += [f"| {what} | ✗ {err} |" for what, err in ceiling.get("errors", {}).items()]
    lines.append("")
    usable = [k for k in keys if k in CEILING_FOR and figs.get(CEILING_FOR[k])]
    if not usable:
        return lines
    lines += [
        "Each figure as a fraction of its ceiling: the Python one (one call at a time for "
        "enqueue single and process c=1; 50-deep pipelines for bulk and process c=100), and "
        "the relay floor for the round trips (the same hops with no work done, so 100 % is "
        "out of reach of any queue: the distance to it is what a queue's own work costs):",
        "",
        _row(["library"] + [WORKLOADS[k].title for k in usable]),
        "|---|" + "|".join(["---:"] * len(usable)) + "|",
    ]
    for lib in libs.values():
        row = [lib["label"]]
        for k in usable:
            res = lib.get("workloads", {}).get(k, {})
            ok = res.get("status") == "ok"
            row.append(f"{100 * res['value'] / figs[CEILING_FOR[k]]:.0f} %" if ok else "–")
        lines.append(_row(row))
    return [*lines, ""]


def _server_cost(libs: dict[str, Any], keys: list[str]) -> list[str]:
    keys = [k for k in keys if not k.startswith("memory")]

    def cost(lib: dict[str, Any], key: str) -> dict[str, float] | None:
        return lib.get("workloads", {}).get(key, {}).get("redis")

    if not any(cost(lib, k) for lib in libs.values() for k in keys):
        return []
    lines = [
        "## Redis server cost per job",
        "",
        "Over each timed section (statistics reset right before it): commands per job (every "
        "client's, plus the commands scripts run inside them) · script calls per job · server "
        "CPU µs per job (used_cpu_user + used_cpu_sys of redis-server; the part spent in "
        "scripts, from INFO commandstats, in brackets). Lower is leaner.",
        "",
        _row(["library"] + [WORKLOADS[k].title for k in keys]),
        "|---|" + "|".join(["---:"] * len(keys)) + "|",
    ]
    for lib in libs.values():
        row = [lib["label"]]
        for k in keys:
            c = cost(lib, k)
            row.append(
                f"{c['commands_per_job']:.1f} · {c['scripts_per_job']:.2f} · "
                f"{c['cpu_us_per_job']:.0f} ({c['script_us_per_job']:.0f}) µs"
                if c
                else "–"
            )
        lines.append(_row(row))
    subject = libs.get(SUBJECT, {}).get("workloads", {})
    cells = []
    for k in keys:
        mine = subject.get(k, {}).get("redis")
        peer_key = PEER_FIGURE.get(k, k)
        peers = [
            (c["cpu_us_per_job"], lib["label"])
            for name, lib in libs.items()
            if is_peer(name) and (c := cost(lib, peer_key))
        ]
        if not mine or not peers:
            cells.append("–")
            continue
        value, label = min(peers)
        cells.append(f"{mine['cpu_us_per_job'] / value:.2f}× vs {label} ({value:.0f} µs)")
    if any(is_peer(name) for name in libs):
        lines.append(_row(["**taskora CPU vs leanest peer**", *cells]))
    rt = keys
    if rt:
        lines += [
            "",
            "Where the CPU goes (µs per job: producer process / worker process / redis-server, "
            "over the timed section; – where that process is not timed; in a round trip the "
            "three work one after another on each job's path). CPU per job moves less with "
            "the machine's load than jobs/s does: it is the steadier A/B measure.",
            "",
            _row(["library"] + [WORKLOADS[k].title for k in rt]),
            "|---|" + "|".join(["---:"] * len(rt)) + "|",
        ]
        for lib in libs.values():
            row = [lib["label"]]
            for k in rt:
                res = lib.get("workloads", {}).get(k, {})
                parts = [res.get("producer_cpu_us_per_job"), res.get("worker_cpu_us_per_job")]
                parts.append((res.get("redis") or {}).get("cpu_us_per_job"))
                row.append(" / ".join("–" if p is None else f"{p:.0f}" for p in parts))
            lines.append(_row(row))
    return [*lines, ""]


def _method(libs: dict[str, Any], meta: dict[str, Any]) -> list[str]:
    lines = [
        "## How each library is driven",
        "",
        'Payload `{"to": "user@example.com", "subject": "Welcome!"}`, no-op handler. '
        f"Sizes: {meta['sizes_text']}.",
        "",
    ]
    lines += [f"- {lib['label']}: {lib['notes']}" for lib in libs.values() if lib.get("notes")]
    return [*lines, ""]


def render(data: dict[str, Any]) -> str:
    meta, libs = data["meta"], data["libraries"]
    keys = [k for k in WORKLOADS if k in meta["workloads"]]
    notes = _Notes()
    lines = _header(meta)
    lines += _results(libs, keys, notes)
    lines += _ratios(libs, data.get("comparison", {}), keys)
    lines += _server_cost(libs, keys)
    lines += _ceiling(libs, data.get("ceiling", {}), keys)
    lines += _method(libs, meta)
    if notes.items:
        lines += ["## Notes", ""] + [f"{i}. {text}" for i, text in enumerate(notes.items, 1)] + [""]
    return "\n".join(lines)
