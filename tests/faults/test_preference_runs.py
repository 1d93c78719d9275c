"""DPO and reward-model runs are guarded like online RL: periodic checkpoints (holding
what the run trains on), resume that continues exactly, the eval gate and rollback.
In process (DeepSpeed, HF generation), seconds each."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from support import small_cfg

INPROCESS = ["executor=inprocess", "rollout.backend=hf", "eval.max_new_tokens=4", "rollout.max_new_tokens=6", "task.eval_size=4"]


def write_pairs(path: Path, count: int = 12, wrong: str = "I think it is {}") -> Path:
    rows = [{"prompt": f"What is {a} + {a}?", "chosen": str(2 * a), "rejected": wrong.format(2 * a + 1)} for a in range(count)]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def run_recipe(tmp_path: Path, recipe: str, name: str, pairs: Path, *overrides: str) -> tuple[dict, list[dict]]:
    from rlhf_platform.recipes.run import run

    cfg = small_cfg(
        f"recipe={recipe}", *INPROCESS, f"task.pairs_path={pairs}", "algo.preference.pairs_per_step=4", "trainer.lr=1e-3",
        f"run.root={tmp_path}", f"run.name={name}", *overrides,
    )
    summary = run(cfg, tmp_path / name)
    metrics = [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
    return summary, [m for m in metrics if "train/loss" in m]


def registry_of(run_dir: Path):
    from rlhf_platform.registry import SQLiteRegistry, recorded_run_id

    registry = SQLiteRegistry(run_dir)
    return registry, recorded_run_id(run_dir)


@pytest.mark.parametrize("recipe", ["dpo", "rm"])
def test_a_resumed_preference_run_continues_exactly_where_it_stopped(tmp_path, recipe):
    """6 steps in one go == 3 steps, then resume=latest to 6: the same losses at every
    step (the same pairs, the same batches, the optimizer state restored)."""
    pairs = write_pairs(tmp_path / "pairs.jsonl")
    common = ["checkpoint.every=3", "gate.every=3", "algo.preference.rm_held_out=0.25"]
    whole, whole_steps = run_recipe(tmp_path, recipe, "whole", pairs, "trainer.max_steps=6", *common)
    run_recipe(tmp_path, recipe, "split", pairs, "trainer.max_steps=3", *common)
    resumed, resumed_steps = run_recipe(tmp_path, recipe, "split", pairs, "trainer.max_steps=6", "resume=latest", *common)

    assert [m["step"] for m in resumed_steps] == [1, 2, 3, 4, 5, 6]  # the resumed run appends to the run's metrics
    assert [m["train/loss"] for m in resumed_steps] == pytest.approx([m["train/loss"] for m in whole_steps], abs=1e-6)
    assert resumed["resumed_from"] is not None and resumed["steps"] == whole["steps"] == 6
    registry, run = registry_of(tmp_path / "split")
    versions = registry.versions(run)
    # the gate's starting champion (step 0), then steps 3 and 6, each with the recipe's state
    assert [v.step for v in versions] == [0, 3, 6] and all(v.eval for v in versions)
    assert [v.status for v in versions] == ["promoted"] * 3 and registry.head(run) == versions[-1].id
    state = json.loads((Path(versions[1].path) / "recipe_state.json").read_text())
    assert state["pairs"] is None and len(state["fingerprint"]) == 64  # pairs from a file: their fingerprint
    if recipe == "rm":
        assert resumed["pair_accuracy_before"] == whole["pair_accuracy_before"]  # kept in the checkpoint
        assert resumed["pair_accuracy_after"] == whole["pair_accuracy_after"]
        assert {"pair_accuracy", "score_margin", "accuracy"} <= registry.get(versions[-1].id).eval.keys()


def test_a_resume_on_different_pairs_is_refused_before_any_role_starts(tmp_path):
    from rlhf_platform.checkpoint_dir import CheckpointError
    from rlhf_platform.recipes.run import make_recipe, prepare_inputs

    pairs = write_pairs(tmp_path / "pairs.jsonl")
    run_recipe(tmp_path, "dpo", "r", pairs, "trainer.max_steps=2", "checkpoint.every=2")
    write_pairs(pairs, wrong="It is {}")  # the file changed under the run
    same = ["algo.preference.pairs_per_step=4", "trainer.lr=1e-3", f"run.root={tmp_path}", "run.name=r", "resume=latest"]
    cfg = small_cfg("recipe=dpo", *INPROCESS, f"task.pairs_path={pairs}", *same)
    with pytest.raises(CheckpointError, match="task.pairs_path holds different pairs"):
        make_recipe(prepare_inputs(cfg, tmp_path / "r"))
    cfg = small_cfg("recipe=dpo", *INPROCESS, *same)
    with pytest.raises(CheckpointError, match="set task.pairs_path to that file"):
        make_recipe(prepare_inputs(cfg, tmp_path / "r"))


def test_sampled_pairs_are_kept_in_the_checkpoint_and_read_back_as_trained():
    from rlhf_platform.checkpoint_dir import CheckpointError
    from rlhf_platform.pairs import pair_trajectories, pairs_fingerprint
    from rlhf_platform.recipes.pair_training import preference_state, resumed_pairs
    from rlhf_platform.types import Prompt

    pairs = [
        t for i in range(3)
        for t in pair_trajectories(f"p{i}", Prompt(f"q{i}", f"What is {i}?", (1, 2, i), str(i), i % 2), [5, i], [7, 8, i])
    ]
    state = json.loads(json.dumps(preference_state(pairs, sampled=True, extra={"pairs_built": 3.0})))
    back, counts = resumed_pairs(state, None, 7)
    assert counts == {"pairs_built": 3.0} and pairs_fingerprint(back) == pairs_fingerprint(pairs)
    assert [(t.group_id, t.prompt_token_ids, t.response_token_ids, t.reward, t.difficulty) for t in back] == [
        (t.group_id, t.prompt_token_ids, t.response_token_ids, t.reward, t.difficulty) for t in pairs
    ]
    with pytest.raises(CheckpointError, match="unset task.pairs_path"):
        resumed_pairs(state, pairs, 7)
    state["pairs"][0]["chosen"] = [9]  # a tampered checkpoint
    with pytest.raises(CheckpointError, match="different pairs"):
        resumed_pairs(state, None, 7)


def test_the_gate_rolls_back_a_bad_reward_model_update_and_a_resume_keeps_the_lowered_rate(tmp_path):
    """A 10000x learning-rate step drops held-out pairwise accuracy: the gate rejects
    it, restores the champion, halves the rate; training recovers; a resumed run keeps
    the halved rate."""
    pairs = write_pairs(tmp_path / "pairs.jsonl")
    guard = ["gate.every=2", "checkpoint.every=2", "gate.rollback_lr_factor=0.5", "algo.preference.rm_held_out=0.25"]
    summary, steps = run_recipe(
        tmp_path, "rm", "rm", pairs, "trainer.max_steps=4", "faults.lr_spike_step=3", "faults.lr_spike_factor=10000", *guard
    )
    assert [r["step"] for r in summary["rollbacks"]] == [4] and "accuracy" in summary["rollbacks"][0]["reason"]
    assert steps[3]["guard/rolled_back"] == 1.0 and steps[3]["gate/passed"] == 0.0
    registry, run = registry_of(tmp_path / "rm")
    # the champions, the rejected step-4 candidate, then the final model (the champion's
    # weights trained no further: the rollback came at the last step)
    assert [(v.step, v.status) for v in registry.versions(run)] == [(0, "promoted"), (2, "promoted"), (4, "rejected"), (4, "candidate")]
    assert summary["pair_accuracy_after"] >= registry.get(registry.versions(run)[1].id).eval["accuracy"] - 1e-9
    rollback = [e for e in registry.events(run) if e.kind == "rollback"]
    assert len(rollback) == 1 and rollback[0].step == 4

    resumed, resumed_steps = run_recipe(tmp_path, "rm", "rm", pairs, "trainer.max_steps=6", "resume=latest", *guard)
    assert resumed["steps"] == 6 and len(resumed_steps) == 6
    head = registry.get(registry.head(run))
    assert json.loads((Path(head.path) / "run_state.json").read_text())["lr_scale"] == 0.5


def test_a_dpo_gate_judges_the_weights_it_names(tmp_path):
    """Gate steps publish before they are judged: every gated checkpoint's weight version
    is one the engines served, and the final model is the head with its held-out result."""
    pairs = write_pairs(tmp_path / "pairs.jsonl", count=8)
    summary, steps = run_recipe(tmp_path, "dpo", "dpo", pairs, "trainer.max_steps=4", "trainer.sync_every=4", "gate.every=2")
    assert [m.get("gate/passed") for m in steps] == [None, 1.0, None, 1.0]
    assert [m["weight_version"] for m in steps] == [0, 2, 2, 4]  # published at the gate step 2 and the last
    registry, run = registry_of(tmp_path / "dpo")
    versions = registry.versions(run)
    assert [(v.step, v.weight_version) for v in versions] == [(0, 0), (2, 2), (4, 4)]
    assert registry.head(run) == versions[-1].id == summary["final_version"]
    assert registry.get(versions[-1].id).eval["accuracy"] == summary["eval_accuracy_after"]
