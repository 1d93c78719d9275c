"""Deterministic replay of an asynchronous run with partial rollout, through real Ray,
vLLM and DeepSpeed: `rlhf replay` re-runs it pinned to its recorded schedule and every
step's figures match (the acceptance bound is 1e-4 on the loss)."""
from __future__ import annotations

import json

import pytest

from support import rlhf, run_cli

pytestmark = pytest.mark.e2e


def test_replay_of_an_async_partial_rollout_run_matches_it(tmp_path):
    run_cli(
        tmp_path, "async", "trainer.max_steps=4", "rollout.streaming=true", "rollout.partial=true",
        "rollout.max_staleness=1", "rollout.max_new_tokens=48", "reward.functions=[{name:brevity,weight:1.0}]",
    )
    rows = [json.loads(line) for line in (tmp_path / "async" / "schedule.jsonl").read_text().splitlines()]
    assert any(len(r["segments"]) > 1 and len({v for _, v in r["segments"]}) > 1 for r in rows), "no reply spans two versions"
    assert any(r["step"] - 1 - r["weight_version"] == 1 for r in rows)  # asynchronous: some replies lag a version
    code, out, err = rlhf(tmp_path, "replay", str(tmp_path / "async"), timeout_s=900)
    assert code == 0, (out + err)[-3000:]
    assert "schedule: identical" in out
    replayed = [json.loads(line) for line in (tmp_path / "async-replay" / "metrics.jsonl").read_text().splitlines()]
    original = [json.loads(line) for line in (tmp_path / "async" / "metrics.jsonl").read_text().splitlines()]
    losses = lambda records: {r["step"]: r["train/loss"] for r in records if "train/loss" in r}  # noqa: E731
    assert len(losses(original)) == 4 and losses(original).keys() == losses(replayed).keys()
    assert all(abs(losses(original)[s] - losses(replayed)[s]) <= 1e-4 for s in losses(original))
    assert len({round(v, 6) for v in losses(original).values()}) > 1  # the losses say something
