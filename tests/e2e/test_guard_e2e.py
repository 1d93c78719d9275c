"""A bad update on the real stack: the divergence watch catches it, the run rolls back
to the champion, the registry records why, and training continues."""
from __future__ import annotations

import json

import pytest

from support import rlhf, run_cli

pytestmark = pytest.mark.e2e


def test_lr_spike_is_caught_and_rolled_back_to_the_champion(tmp_path):
    summary, steps = run_cli(
        tmp_path, "guarded", "trainer.max_steps=6", "rollout.max_staleness=0", "eval.before=false",
        "algo.kl.coef=0.01",  # starts the Reference: the watch sees the KL
        "reward.functions=[{name:brevity,weight:1.0}]",
        # KL to the reference is ~0.015 a step before the spike and 0.84 on the spiked policy's own
        # samples (the engine serves its whole policy since the LM-head re-pack fix; 1.0 was tuned
        # to an engine whose head lagged): 0.5 catches it the step after
        "gate.every=2", "gate.divergence_max_kl=0.5", "gate.rollback_lr_factor=0.5",
        "faults.lr_spike_step=3", "faults.lr_spike_factor=1000",
    )
    assert summary["steps"] == 6 and summary["stopped_early"] is None
    assert [r["step"] for r in summary["rollbacks"]] == [4]
    reason = summary["rollbacks"][0]["reason"]
    assert reason.startswith("diverged at step 4:")
    by_step = {m["step"]: m for m in steps}
    assert by_step[4]["guard/rolled_back"] == 1.0
    # the champion's weights are back: the KL to the reference is small again
    assert by_step[5]["train/kl_ref"] < 0.5 and by_step[6]["train/kl_ref"] < 0.5
    assert summary["weight_version"] == 7  # 6 steps + the champion republished as a new version

    run = str(tmp_path / "guarded")
    code, out, err = rlhf(tmp_path, "ckpt", "events", "--run", run, "--json")
    events = json.loads(out)
    assert code == 0 and [e["kind"] for e in events] == ["rollback"] and events[0]["step"] == 4
    code, out, err = rlhf(tmp_path, "ckpt", "list", "--run", run, "--json")
    versions = {v["step"]: v for v in json.loads(out)}
    assert sorted(versions) == [0, 2, 6]  # the start, the gates; nothing saved from the diverged step
    assert versions[0]["status"] == "promoted" and versions[0]["reason"] == "the weights training starts from"
    assert versions[2]["status"] == "promoted" and "accuracy" in versions[2]["eval"]
    assert events[0]["version"] == versions[2]["id"]  # rolled back to the newest champion
    assert versions[6]["parent"] == versions[2]["id"]  # lineage continues from the champion
    assert versions[6]["status"] in ("promoted", "rejected") and versions[6]["eval"]
