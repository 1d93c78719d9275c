"""Exact resume through the real stack: a run stopped at step 2 and resumed to step 4
trains the same prompts in the same order, and its losses match an uninterrupted run."""
from __future__ import annotations

import json

import pytest

from support import run_cli

pytestmark = pytest.mark.e2e

COMMON = ["rollout.max_staleness=0", "eval.before=false", "eval.after=false", "checkpoint.every=2"]


def test_resumed_run_matches_uninterrupted_run(tmp_path):
    _, whole = run_cli(tmp_path, "whole", "trainer.max_steps=4", *COMMON)
    _, first = run_cli(tmp_path, "split", "trainer.max_steps=2", *COMMON)
    summary, resumed = run_cli(tmp_path, "split", "trainer.max_steps=4", "resume=latest", *COMMON)

    assert summary["resumed_from"] == 1 and summary["steps"] == 4 and summary["weight_version"] == 4
    ledger = lambda name: json.loads((tmp_path / name / "prompt_ledger.json").read_text())
    assert len(ledger("whole")) == 4 * 4 and ledger("split") == ledger("whole")  # none twice, none skipped

    assert resumed[:2] == first  # metrics.jsonl of the run: steps 1-2, then the resumed 3-4
    assert [m["step"] for m in resumed] == [1, 2, 3, 4] and [m["weight_version"] for m in resumed] == [1, 2, 3, 4]
    for a, b in zip(whole, resumed):
        assert b["train/loss"] == pytest.approx(a["train/loss"], rel=1e-4, abs=1e-6)
        assert b["train/grad_norm"] == pytest.approx(a["train/grad_norm"], rel=1e-4)
        assert b["rollout/reward_mean"] == a["rollout/reward_mean"]


def test_resume_without_a_checkpoint_fails_before_any_actor_starts(tmp_path):
    import sys

    from support import SMALL, run_in_own_session

    cmd = [sys.executable, "-c", "from rlhf_platform.commands.train import train_main; train_main()", *SMALL,
           f"run.root={tmp_path}", "run.name=fresh", "resume=latest"]
    code, _, err = run_in_own_session(cmd, tmp_path / "fresh", timeout_s=300)
    assert code == 2 and "resume=latest: run 'fresh' has no checkpoint" in err
    assert "Started a local Ray instance" not in err
