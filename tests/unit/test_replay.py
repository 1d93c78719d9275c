"""Replay's checks, in process: a run that cannot be replayed says why, and a replay
that diverges from its record fails instead of passing quietly."""
from __future__ import annotations

import json

import pytest

from support import rlhf, run_cli

INPROCESS = ["executor=inprocess", "rollout.backend=hf", "trainer.max_steps=3", "rollout.max_new_tokens=12",
             "reward.functions=[{name:brevity,weight:1.0}]"]


@pytest.fixture(scope="module")
def streamed_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("replay")
    run_cli(root, "streamed", *INPROCESS, "rollout.streaming=true", "rollout.max_staleness=1")
    return root / "streamed"


def test_a_replay_that_samples_other_replies_fails(streamed_run, tmp_path):
    import shutil

    from rlhf_platform.recipes.replay import replay_run
    from rlhf_platform.streaming import ReplayError

    tampered = tmp_path / "tampered"
    shutil.copytree(streamed_run, tampered)
    rows = [json.loads(line) for line in (tampered / "schedule.jsonl").read_text().splitlines()]
    for row in rows:
        row["seed"] += 1  # other seeds: other replies than the ones trained
    (tampered / "schedule.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(ReplayError, match="diverged|does not match"):
        replay_run(tampered)


def test_a_batch_run_is_refused_with_a_clear_error(tmp_path):
    from rlhf_platform.recipes.replay import read_schedule
    from rlhf_platform.streaming import ReplayError

    run_cli(tmp_path, "batch", *INPROCESS, "trainer.max_steps=1")
    code, _, err = rlhf(tmp_path, "replay", str(tmp_path / "batch"))
    assert code == 2 and "needs rollout.streaming=true" in err
    with pytest.raises(ReplayError, match=r"schedule.jsonl row 1: no segments; only runs with rollout.streaming=true"):
        read_schedule(tmp_path / "batch")


def test_replay_needs_a_streaming_config():
    from support import small_cfg

    from rlhf_platform.config import ConfigError

    with pytest.raises(ConfigError, match="replay=.*not a run directory"):
        small_cfg("replay=/nonexistent")
