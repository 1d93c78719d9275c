"""`rlhf report RUN_DIR`: a run at a glance, from its metrics.jsonl and summary.json.

Writes `RUN_DIR/report/` with one PNG per quantity (reward, accuracy, KL, clip
fraction, train-inference mismatch, entropy, response length, staleness, and a timeline of rollout vs training activity that shows
how much they overlap) and `report.md`, a short summary that embeds them.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

# plot file -> (title, y label, [(metric key, legend label)])
PANELS: dict[str, tuple[str, str, list[tuple[str, str]]]] = {
    "reward.png": ("Reward", "mean reward", [("rollout/reward_mean", "sampled (train)"), ("train/reward_accuracy", "pairs ranked right")]),
    "accuracy.png": ("Held-out accuracy", "accuracy", [("eval/accuracy", "eval"), ("gate/accuracy", "eval gate candidate"), ("gate/champion_accuracy", "eval gate champion")]),
    "kl.png": ("KL", "KL (nats/token)", [("train/kl_ref", "to reference"), ("train/approx_kl", "old -> new policy (update size)")]),
    "clip_fraction.png": (
        "Clip fraction (share of tokens whose PPO clip is active)", "fraction",
        [("train/clip_fraction", "all"), ("train/clip_fraction_low", "low side (A < 0)"), ("train/clip_fraction_high", "high side (A > 0)")],
    ),
    "mismatch_kl.png": (
        "Train-inference mismatch", "KL (nats/token)",
        [("train/mismatch_kl", "KL(engine || trainer), same weights"), ("train/is_masked_fraction", "share masked by IS")],
    ),
    "entropy.png": ("Policy entropy", "nats/token", [("train/entropy", "entropy")]),
    "response_length.png": ("Response length", "tokens", [("rollout/response_length_mean", "mean")]),
    "staleness.png": ("Sample staleness", "weight versions behind", [("rollout/staleness_mean", "mean"), ("rollout/staleness_max", "max")]),
}


@dataclass
class RunReport:
    """What `write_report` wrote and found."""

    directory: Path
    plots: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # plot -> why it was not drawn
    overlap: float | None = None  # share of training time during which a rollout was generating
    bad_lines: list[int] = field(default_factory=list)  # metrics.jsonl lines skipped (a run killed mid-write leaves one)


class ReportError(ValueError):
    """A run directory's file that cannot be reported on; the message names it."""


def read_metrics(run_dir: Path, bad_lines: list[int] | None = None) -> list[dict]:
    """The rows of `run_dir/metrics.jsonl`: JSON objects with a whole `step`. Any other
    line (a truncated last line after a kill, a hand edit) is skipped and its number
    appended to `bad_lines`."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no metrics (is {run_dir} a run directory written by rlhf-train?)")
    rows = []
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except (ValueError, RecursionError):
            row = None
        if isinstance(row, dict) and type(row.get("step")) is int:
            rows.append(row)
        elif bad_lines is not None:
            bad_lines.append(number)
    return rows


def _number(value: object) -> float | None:
    """`value` as a finite float, or None (a string, null, NaN, a diverged step)."""
    if type(value) not in (int, float) or not math.isfinite(value):
        return None
    return float(value)


def series(rows: list[dict], key: str) -> tuple[list[int], list[float]]:
    """(steps, values) of `key`, finite values only (a diverged step shows as a gap)."""
    points = [(row["step"], _number(row.get(key))) for row in rows]
    points = [(s, v) for s, v in points if v is not None]
    return [s for s, _ in points], [v for _, v in points]


def intervals(rows: list[dict], kind: str) -> list[tuple[float, float]]:
    """Wall-clock (start, end) of each step's `kind` activity (rollout or train)."""
    spans = [(_number(r.get(f"timeline/{kind}_start")), _number(r.get(f"timeline/{kind}_end"))) for r in rows]
    return [(start, end) for start, end in spans if start is not None and end is not None]


def overlap_fraction(rollout: list[tuple[float, float]], train: list[tuple[float, float]]) -> float | None:
    """Share of training time during which some rollout was generating (1.0: rollout fully
    hidden behind training; 0.0: strictly alternating)."""
    merged: list[list[float]] = []
    for start, end in sorted(rollout):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    total = sum(end - start for start, end in train)
    if total <= 0:
        return None
    covered = sum(max(0.0, min(e, re) - max(s, rs)) for s, e in train for rs, re in merged)
    return covered / total


def write_report(run_dir: Path) -> RunReport:
    """Draw the plots and write report.md under `run_dir/report`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    report = RunReport(run_dir / "report")
    rows = read_metrics(run_dir, report.bad_lines)
    summary_path = run_dir / "summary.json"
    summary = _read_summary(summary_path) if summary_path.is_file() else {}
    report.directory.mkdir(exist_ok=True)
    rollbacks = [row["step"] for row in rows if row.get("guard/rolled_back")]

    for name, (title, ylabel, keys) in PANELS.items():
        drawn = [(label, *series(rows, key)) for key, label in keys]
        drawn = [d for d in drawn if d[1]]
        if not drawn:
            report.skipped[name] = f"no {' or '.join(k for k, _ in keys)} in metrics.jsonl"
            continue
        fig, ax = plt.subplots(figsize=(7, 3.5))
        for label, steps, values in drawn:
            ax.plot(steps, values, marker="o", markersize=3, label=label)
        for step in rollbacks:
            ax.axvline(step, color="red", linestyle="--", linewidth=1)
        ax.set(title=title + (" (red: rollback)" if rollbacks else ""), xlabel="step", ylabel=ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        _save(fig, report, name)

    rollout, train = intervals(rows, "rollout"), intervals(rows, "train")
    if train:
        report.overlap = overlap_fraction(rollout, train)
        origin = min(s for s, _ in rollout + train)
        fig, ax = plt.subplots(figsize=(9, 2.6))
        for y, spans, color in ((1, rollout, "tab:blue"), (0, train, "tab:orange")):
            ax.broken_barh([(s - origin, e - s) for s, e in spans], (y - 0.35, 0.7), color=color, edgecolor="black", linewidth=0.3)
        ax.set_yticks([0, 1], ["training", "rollout"])
        share = f"{100 * report.overlap:.0f}% of training time overlapped by rollout" if report.overlap is not None else ""
        ax.set(title=f"Activity timeline: {share}", xlabel="seconds since the first rollout")
        ax.grid(axis="x", alpha=0.3)
        _save(fig, report, "timeline.png")
    else:
        report.skipped["timeline.png"] = "no timeline/* metrics (recipes without rollouts, or a run before they were logged)"
    try:
        markdown = _markdown(run_dir, summary, rows, report, rollbacks)
    except (TypeError, KeyError, ValueError, AttributeError) as err:
        raise ReportError(f"{summary_path}: a value of an unexpected kind ({err}); was it edited by hand?") from err
    (report.directory / "report.md").write_text(markdown)
    return report


def _read_summary(path: Path) -> dict:
    try:
        summary = json.loads(path.read_text())
    except (ValueError, RecursionError) as err:
        raise ReportError(f"{path}: not JSON ({err}); the run may have been killed while writing it") from err
    if not isinstance(summary, dict):
        raise ReportError(f"{path}: not a JSON object")
    return summary


def _save(fig, report: RunReport, name: str) -> None:
    fig.tight_layout()
    fig.savefig(report.directory / name, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    report.plots.append(name)


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _markdown(run_dir: Path, summary: dict, rows: list[dict], report: RunReport, rollbacks: list[int]) -> str:
    steps = [row for row in rows if "train/loss" in row]
    waits = [(_number(row.get("time/rollout_wait_seconds")), _number(row.get("time/train_seconds"))) for row in steps]
    step_seconds = [wait + train for wait, train in waits if wait is not None and train is not None]
    lines = [
        f"# Run report: {run_dir.name}",
        "",
        f"- recipe: {summary.get('recipe', 'n/a')}; steps: {summary.get('steps', len(steps))}; samples: {summary.get('samples', 'n/a')}",
        f"- held-out accuracy: {_percent(summary.get('eval_accuracy_before'))} before, {_percent(summary.get('eval_accuracy_after'))} after",
        f"- wall time: {summary.get('wall_time_s', 'n/a')} s"
        + (f"; median step {sorted(step_seconds)[len(step_seconds) // 2]:.1f} s" if step_seconds else ""),
        f"- stale samples dropped: {summary.get('dropped_stale', 'n/a')}; max staleness allowed: {summary.get('max_staleness', 'n/a')} "
        f"weight syncs ({summary.get('max_sample_lag', 'n/a')} optimizer steps with sync_every {summary.get('sync_every', 'n/a')})",
        f"- rollbacks: {len(summary.get('rollbacks', [])) or len(rollbacks)}"
        + "".join(f"\n  - step {r['step']}: {r['reason']}" for r in summary.get("rollbacks", [])),
        f"- role faults survived: {len(summary.get('faults_survived', []))}",
    ]
    for name, after in (summary.get("eval_sets_after") or {}).items():
        before = (summary.get("eval_sets_before") or {}).get(name, {})
        figures = [k for k in after if k != "num_prompts" and "/" not in k and k != "reward"]
        lines.append(
            f"- eval set {name} ({after.get('num_prompts', 'n/a')} prompts): "
            + ", ".join(f"{k} {_percent(before.get(k))} -> {_percent(after.get(k))}" for k in figures)
        )
    if summary.get("stopped_early"):
        lines.append(f"- stopped early: {summary['stopped_early']}")
    if report.overlap is not None:
        lines.append(f"- rollout/training overlap: {100 * report.overlap:.0f}% of training time had a rollout generating")
    lines += ["", *(f"![{name}]({name})" for name in report.plots)]
    if report.skipped:
        lines += ["", "Not drawn:", *(f"- {name}: {why}" for name, why in report.skipped.items())]
    if report.bad_lines:
        lines += ["", f"Skipped {len(report.bad_lines)} unreadable metrics.jsonl line(s): {report.bad_lines[:10]}"]
    return "\n".join(lines) + "\n"
