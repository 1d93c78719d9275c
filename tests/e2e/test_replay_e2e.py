"""Deterministic replay of an asynchronous run with partial rollout, through real Ray,
vLLM and DeepSpeed: `rlhf replay` re-runs it pinned to its recorded schedule, and a
resume from one of its checkpoints with `replay=` continues it exactly; every step's
figures match the original's (the acceptance bound is 1e-4 on the loss)."""
from __future__ import annotations

import json

import pytest

from support import rlhf, run_cli

pytestmark = pytest.mark.e2e

ASYNC = [
    "trainer.max_steps=4", "rollout.streaming=true", "rollout.partial=true", "rollout.max_staleness=1",
    "rollout.max_new_tokens=48", "reward.functions=[{name:brevity,weight:1.0}]",
    "checkpoint.every=1", "checkpoint.keep_last=8",
]


def records(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def losses(metrics):
    return [(r["step"], r["train/loss"]) for r in metrics if "train/loss" in r]


@pytest.fixture(scope="module")
def async_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("async")
    run_cli(root, "async", *ASYNC)
    return root / "async"


def test_replay_of_an_async_partial_rollout_run_matches_it(async_run):
    rows = records(async_run / "schedule.jsonl")
    assert any(len({v for _, v in r["segments"]}) > 1 for r in rows), "no reply spans two versions"
    assert any(r["step"] - 1 - r["weight_version"] == 1 for r in rows)  # asynchronous: some replies lag a version
    code, out, err = rlhf(async_run.parent, "replay", str(async_run), timeout_s=900)
    assert code == 0, (out + err)[-3000:]
    assert "schedule: identical" in out
    original, replayed = losses(records(async_run / "metrics.jsonl")), losses(records(async_run.parent / "async-replay" / "metrics.jsonl"))
    assert [s for s, _ in original] == [s for s, _ in replayed] == [1, 2, 3, 4]
    assert all(abs(a - b) <= 1e-4 for (_, a), (_, b) in zip(original, replayed))
    assert len({round(v, 6) for _, v in original}) > 1  # the losses say something


def test_resume_of_an_async_run_with_replay_continues_it_exactly(async_run, tmp_path):
    import shutil

    from rlhf_platform.registry import SQLiteRegistry

    run = tmp_path / "async"
    shutil.copytree(async_run, run)  # the other test replays the original untouched
    original = losses(records(run / "metrics.jsonl"))
    step2 = next(r for r in SQLiteRegistry(run).versions("async") if r.step == 2)
    # replies trained at steps 3-4 that version 1 started: regenerated from its checkpoint
    assert any(r["step"] > 2 and r["segments"][0][1] < 2 for r in records(run / "schedule.jsonl"))
    run_cli(tmp_path, "async", *ASYNC, f"resume={step2.id}", f"replay={run}")
    resumed = losses(records(run / "metrics.jsonl"))[len(original):]
    assert [s for s, _ in resumed] == [3, 4]
    assert all(abs(a - b) <= 1e-4 for (_, a), (_, b) in zip(original[2:], resumed))
    ledger = json.loads((run / "prompt_ledger.json").read_text())
    assert len(ledger) == 4 * 4 and len(set(ledger)) == len(ledger)  # each prompt trained once across the resume
