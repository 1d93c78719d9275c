"""What a resumed run must carry over from the run it continues: the learning rate a
rollback lowered (and the adaptive KL coefficient, restored with the Advantage Builder)."""
from __future__ import annotations

import json
from pathlib import Path

from support import small_cfg

INPROCESS = ["executor=inprocess", "rollout.backend=hf", "eval.max_new_tokens=4", "rollout.max_new_tokens=6"]


def test_the_learning_rate_a_rollback_lowered_is_kept_by_a_resumed_run(tiny_model_dir, tiny_tokenizer, tmp_path):
    from rlhf_platform.data import task_rows
    from rlhf_platform.prompts import tokenize_rows
    from rlhf_platform.recipes import online_rl
    from rlhf_platform.recipes.checkpointing import RunCheckpoints, open_registry
    from rlhf_platform.recipes.guard import Guard
    from rlhf_platform.recipes.run_roles import start_roles
    from rlhf_platform.roles.inprocess import InProcessExecutor

    overrides = [*INPROCESS, "rollout.max_staleness=0", "algo.kl.coef=0.01", "reward.functions=[{name:brevity,weight:1.0}]",
                 "gate.every=2", "gate.divergence_max_kl=0.3", "gate.rollback_lr_factor=0.5", "checkpoint.every=1",
                 "faults.lr_spike_step=3", "faults.lr_spike_factor=1000", "algo.kl.target=0.05", "algo.kl.mode=reward", "algo.advantage.estimator=reinforce_pp_baseline"]
    cfg = small_cfg("trainer.max_steps=6", *overrides)
    train_rows, eval_rows = task_rows(cfg.task, 0, tmp_path / "data")
    prompts = tokenize_rows(tiny_tokenizer, train_rows, 200)[0]
    eval_prompts = tokenize_rows(tiny_tokenizer, eval_rows, 200)[0][:4]
    run_dir = tmp_path / "run"

    def guard_for(cfg):
        return Guard(cfg, RunCheckpoints(cfg, run_dir, open_registry(cfg, run_dir)), eval_prompts)

    roles = start_roles(InProcessExecutor(), cfg, tiny_model_dir, prompts)
    try:
        guard = guard_for(cfg)
        stats, _ = online_rl.train(roles, cfg, guard=guard)
        assert [r["step"] for r in stats.rollbacks] == [4] and guard.lr == cfg.trainer.lr * 0.5
        kl_coef = roles.builder.get_state().result()["kl_coef"]
        latest = guard.checkpoints.registry.versions(guard.run)[-1]
    finally:
        roles.shutdown()
    assert json.loads((Path(latest.path) / "run_state.json").read_text())["lr_scale"] == 0.5

    # resumed under a new learning rate: the rollback's halving applies to it
    cfg = small_cfg("trainer.max_steps=8", "trainer.lr=2e-3", *overrides)
    roles = start_roles(InProcessExecutor(), cfg, tiny_model_dir, prompts)
    try:
        guard = guard_for(cfg)
        state = guard.checkpoints.restore(roles, latest.id)
        guard.scale_lr(roles, state.lr_scale)  # what OnlineRLRecipe.setup does on resume
        assert guard.lr == 2e-3 * 0.5
        assert roles.policy.ranks[0]._obj.optimizer.param_groups[0]["lr"] == 2e-3 * 0.5
        assert roles.builder.get_state().result()["kl_coef"] == kl_coef != 0.01  # the adaptive coefficient moved
    finally:
        roles.shutdown()


def test_a_resumed_run_continues_its_wandb_run(tmp_path, monkeypatch):
    from rlhf_platform.tracking import MetricsLogger

    monkeypatch.setenv("WANDB_MODE", "offline")
    for steps in ([1, 2], [3, 4]):  # the run, then its resume in the same run directory
        logger = MetricsLogger(tmp_path, "wandb", "rlhf-test", "offline", "run", {"trainer": {"lr": 1e-3}})
        for step in steps:
            logger.log({"train/loss": float(step)}, step)
        logger.close()
    runs = sorted(tmp_path.glob("wandb/offline-run-*"))
    assert len(runs) == 2 and len({run.name.rsplit("-", 1)[1] for run in runs}) == 1  # one wandb run id: resumed
    assert [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3, 4]
