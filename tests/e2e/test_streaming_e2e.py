"""Streaming and partial rollout through real Ray, the real vLLM CPU engine and real
DeepSpeed: groups reach the trainer as they finish, and with partial rollout a weight
update pauses replies at a token and continues them on the new weights."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from support import run_in_own_session, small_cfg

pytestmark = pytest.mark.e2e

ENGINE_SCRIPT = Path(__file__).with_name("partial_rollout_script.py")


def _engine_run(tmp_path, model_dir, name):
    code, out, err = run_in_own_session([sys.executable, str(ENGINE_SCRIPT), str(model_dir)], tmp_path / name, 600)
    assert code == 0, err[-3000:]
    return json.loads(next(line for line in out.splitlines() if line.startswith("RESULT "))[len("RESULT "):])


def test_partial_rollout_continues_replies_on_the_new_weights(tmp_path, tiny_model_dir):
    """One engine, two weight updates while its replies are mid-way: every reply spans
    the three versions, each token's log-prob is the one its version's weights give
    (an HF forward of them), and the same schedule samples the same tokens again."""
    first = _engine_run(tmp_path, tiny_model_dir, "first")
    assert first["interruptions"] > 0
    assert all(len(spans) == 3 and [s[0] for s in spans] == [0, 1, 2] for spans in first["spans"])
    assert all(value < 1e-4 for value in first["max_abs"].values()), first["max_abs"]
    again = _engine_run(tmp_path, tiny_model_dir, "again")
    assert again["tokens"] == first["tokens"] and again["spans"] == first["spans"]


@pytest.mark.parametrize("partial", [False, True], ids=["streaming", "streaming+partial"])
def test_streaming_run(ray_local, tmp_path, tiny_model_dir, tiny_tokenizer, partial):
    from rlhf_platform.data import task_rows
    from rlhf_platform.prompts import tokenize_rows
    from rlhf_platform.recipes import online_rl
    from rlhf_platform.recipes.run_roles import start_roles
    from rlhf_platform.roles.ray_executor import RayExecutor

    cfg = small_cfg(
        "trainer.max_steps=4", "rollout.max_staleness=1", "rollout.streaming=true", f"rollout.partial={str(partial).lower()}",
        "rollout.max_new_tokens=48", "reward.functions=[{name:brevity,weight:1.0}]",
    )
    train_rows, _ = task_rows(cfg.task, 0, tmp_path)
    prompts, _ = tokenize_rows(tiny_tokenizer, train_rows, 200)
    roles = start_roles(RayExecutor(cfg.ray), cfg, tiny_model_dir, prompts)
    try:
        stats, versions = online_rl.train(roles, cfg)
        ledger = roles.queue.get_ledger().result()
        queue = roles.queue.get_stats().result()
    finally:
        roles.shutdown()
    assert stats.steps == 4 and versions.trained == 4
    rows = stats.schedule
    assert len(rows) == stats.samples and len({r["group_id"] for r in rows}) == 4 * 4
    # No sample older than the bound: its oldest trained token lags by at most max_lag.
    for row in rows:
        oldest = next(v for v, start, end in row["version_spans"] if end > row["masked_tokens"])
        assert row["step"] - 1 - oldest <= versions.max_lag
    spans = [len(r["version_spans"]) for r in rows]
    if partial:
        assert max(spans) >= 2, "no reply spanned a weight update"
        assert stats.history[-1]["stream/interrupted_replies"] > 0
    else:
        assert max(spans) == 1
    # Every prompt trained exactly once; nothing left leased.
    assert len(ledger) == 4 * 4 and len(set(ledger)) == len(ledger)
    assert queue.in_flight == 0 and queue.leased - queue.requeued == queue.acked
