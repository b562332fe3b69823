"""Bar chart per workload from results JSON. Runs in the base venv (matplotlib):

python -m harness.plot results/latest.json results/latest.png
"""

from __future__ import annotations

import json
import math
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from harness.workloads import WORKLOADS

SUBJECT = "taskora"


def plot(data: dict, out_path: str) -> None:
    keys = [k for k in WORKLOADS if k in data["meta"]["workloads"]]
    libs = data["libraries"]
    cols = 3
    rows = math.ceil(len(keys) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6 * cols, 4.2 * rows), squeeze=False)
    for ax in axes.flat[len(keys) :]:
        ax.axis("off")
    for ax, key in zip(axes.flat, keys, strict=False):
        wl = WORKLOADS[key]
        labels, values, colors, texts = [], [], [], []
        for name, lib in libs.items():
            res = lib.get("workloads", {}).get(key, {})
            labels.append(lib["label"].split(" (")[0].split(" +")[0])
            if not lib.get("error") and res.get("status") == "ok":
                values.append(res["value"])
                texts.append(
                    f"{res['value']:,.0f}" if res["value"] >= 10 else f"{res['value']:.1f}"
                )
            else:
                values.append(0.0)
                status = "install failed" if lib.get("error") else res.get("status", "error")
                texts.append(
                    "n/a" if status == "unsupported" else "✗ " + status.replace("error", "failed")
                )
            colors.append("#d62728" if name == SUBJECT else "#7f7f7f")
        bars = ax.bar(range(len(labels)), values, color=colors)
        top = max(values) if any(values) else 1.0
        for bar, text, value in zip(bars, texts, values, strict=True):
            ax.text(
                bar.get_x() + bar.get_width() / 2,
                value + top * 0.01,
                text,
                ha="center",
                va="bottom",
                fontsize=7,
                rotation=90 if len(labels) > 6 else 0,
            )
        ax.set_ylim(0, top * 1.3)
        ax.set_xticks(range(len(labels)))
        ax.set_xticklabels(labels, rotation=35, ha="right", fontsize=8)
        better = "higher is better" if wl.higher_is_better else "lower is better"
        ax.set_title(f"{wl.title} — {wl.unit} ({better})", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    meta = data["meta"]
    fig.suptitle(
        f"taskora vs Python peers — {meta['date']} · {meta['cpu_count']} CPUs · Redis "
        f"{meta['redis_version']} · median of {meta['repeat']}",
        fontsize=11,
    )
    fig.tight_layout()
    fig.savefig(out_path, dpi=110)


if __name__ == "__main__":
    with open(sys.argv[1]) as fh:
        plot(json.load(fh), sys.argv[2])
