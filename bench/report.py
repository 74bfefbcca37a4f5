"""Turning runs into the benchmark's answer: medians with their spread, ratios, table, chart.

Ratios are taken per round (a target against the ceiling measured in the same round and
workload), then summarised, so a slow patch of the machine moves both sides of a ratio.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

WORKLOAD_TITLES = {
    "seen": "tokens seen before (a few tokens, each sent again and again)",
    "new": "every token new (no token sent twice in a run)",
}
# Per-run figures summarised as median, min and max; ratios to the ceiling are added apart.
METRICS = ("rps", "p50_ms", "p99_ms", "rss_mib", "cpu_us_per_req", "other_cpu_cores")


def spread(values: Sequence[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "n": len(values),
    }


def summarise(
    runs: Sequence[Mapping[str, Any]], targets: Sequence[str], workloads: Sequence[str]
) -> dict[str, dict[str, dict[str, Any]]]:
    """summary[workload][target] = {metric: spread, "rps_ratio": spread, "p99_ratio": ...}."""
    valid = [r for r in runs if r.get("valid")]
    ceiling = {(r["round"], r["workload"]): r for r in valid if r["target"] == "ceiling"}
    summary: dict[str, dict[str, dict[str, Any]]] = {}
    for workload in workloads:
        summary[workload] = {}
        for target in targets:
            mine = [r for r in valid if r["target"] == target and r["workload"] == workload]
            if not mine:
                continue
            entry: dict[str, Any] = {m: spread([r[m] for r in mine if r.get(m) is not None]) for m in METRICS}
            pairs = [(r, ceiling[r["round"], workload]) for r in mine if (r["round"], workload) in ceiling]
            entry["rps_ratio"] = spread([r["rps"] / c["rps"] for r, c in pairs])
            entry["p99_ratio"] = spread([r["p99_ms"] / c["p99_ms"] for r, c in pairs])
            summary[workload][target] = entry
    return summary


def _cell(s: Mapping[str, float] | None, fmt: str, with_range: bool = True) -> str:
    if s is None:
        return "n/a"
    text = format(s["median"], fmt)
    if with_range and s["n"] > 1:
        text += f" [{format(s['min'], fmt)}-{format(s['max'], fmt)}]"
    return text


def table(
    summary: Mapping[str, Mapping[str, Mapping[str, Any]]],
    targets: Sequence[str],
    failures: Mapping[str, str],
    invalid: Iterable[Mapping[str, Any]],
) -> str:
    """The printed result: one block per workload, median [min-max] over rounds."""
    columns = (
        "target",
        "req/s",
        "x ceiling",
        "p50 ms",
        "p99 ms",
        "p99 x ceiling",
        "peak RSS MiB",
        "CPU us/req",
        "others' cores",
    )
    lines: list[str] = []
    for workload, by_target in summary.items():
        rows = [columns]
        for target in targets:
            if target in by_target:
                e = by_target[target]
                rows.append(
                    (
                        target,
                        _cell(e["rps"], ".0f"),
                        "1.00" if target == "ceiling" else _cell(e["rps_ratio"], ".2f"),
                        _cell(e["p50_ms"], ".2f", with_range=False),
                        _cell(e["p99_ms"], ".2f"),
                        "1.00" if target == "ceiling" else _cell(e["p99_ratio"], ".2f"),
                        _cell(e["rss_mib"], ".1f"),
                        _cell(e["cpu_us_per_req"], ".0f", with_range=False),
                        _cell(e["other_cpu_cores"], ".2f", with_range=False),
                    )
                )
            elif target in failures:
                rows.append((target, "failed", "", "", "", "", "", "", ""))
        widths = [max(len(row[i]) for row in rows) for i in range(len(columns))]
        lines.append(f"\n{workload}: {WORKLOAD_TITLES.get(workload, workload)}")
        for row in rows:
            lines.append("  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    for target, message in failures.items():
        lines.append(f"\n{target} was not measured: {message}")
    for run in invalid:
        lines.append(f"\nround {run['round']} {run['workload']} {run['target']}: left out, {run['why']}")
    return "\n".join(lines)


def chart(
    summary: Mapping[str, Mapping[str, Mapping[str, Any]]],
    targets: Sequence[str],
    title: str,
    path: Path,
) -> None:
    """req/s and p99 per target and workload, bars at the median, whiskers at min and max."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    workloads = list(summary)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    width = 0.8 / max(1, len(targets))
    panels = (
        ("rps", "rps_ratio", "req/s (higher is better)"),
        ("p99_ms", "p99_ratio", "p99 latency, ms (lower is better)"),
    )
    for ax, (metric, ratio, label) in zip(axes, panels, strict=True):
        for i, target in enumerate(targets):
            xs, ys, lo, hi, tops, notes = [], [], [], [], [], []
            for j, workload in enumerate(workloads):
                entry = summary[workload].get(target)
                if entry is None or entry[metric] is None:
                    continue
                s = entry[metric]
                xs.append(j + (i - (len(targets) - 1) / 2) * width)
                ys.append(s["median"])
                lo.append(s["median"] - s["min"])
                hi.append(s["max"] - s["median"])
                tops.append(s["max"])
                r = entry[ratio]
                notes.append(f"{r['median']:.2f}x" if r else "")
            if not xs:
                continue
            ax.bar(xs, ys, width, yerr=[lo, hi], capsize=3, label=target)
            for x, top, note in zip(xs, tops, notes, strict=True):
                ax.annotate(
                    note,
                    (x, top),
                    ha="center",
                    va="bottom",
                    fontsize=8,
                    xytext=(0, 3),
                    textcoords="offset points",
                )
        ax.margins(y=0.12)
        ax.set_xticks(range(len(workloads)), [f"tokens {w}" for w in workloads])
        ax.set_title(label, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
