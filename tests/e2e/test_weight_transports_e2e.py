"""GRPO through real Ray, two real vLLM engines and a DeepSpeed trainer, with weights
travelling by each transport that is not the object store: shared memory (tmpfs slots
the engines map) and collective (a gloo group of trainer rank 0 and both engines)."""
from __future__ import annotations

import pytest
import ray

from support import small_cfg

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("transport", ["shared_memory", "collective"])
def test_grpo_with_two_engines_over_the_transport(ray_local, tmp_path, tiny_model_dir, tiny_tokenizer, transport):
    from rlhf_platform.data import task_rows
    from rlhf_platform.prompts import tokenize_rows
    from rlhf_platform.recipes import online_rl
    from rlhf_platform.recipes.run_roles import start_roles
    from rlhf_platform.roles.ray_executor import RayExecutor

    cfg = small_cfg(
        "trainer.max_steps=3", "rollout.num_engines=2", "rollout.max_staleness=0", f"weight_sync.transport={transport}",
        "reward.functions=[{name:brevity,weight:1.0}]",
    )
    train_rows, _ = task_rows(cfg.task, 0, tmp_path)
    prompts, _ = tokenize_rows(tiny_tokenizer, train_rows, 200)
    roles = start_roles(RayExecutor(cfg.ray), cfg, tiny_model_dir, prompts)
    tokens = lambda: [ray.get(e.actor.__ray_call__.remote(lambda role: role.tokens_generated)) for e in roles.engines]  # noqa: E731
    per_step = []
    try:
        stats, versions = online_rl.train(roles, cfg, on_step=lambda step, _m: per_step.append(tokens()))
        assert stats.steps == 3 and versions.published == 3
        for before, after in zip([[0, 0], *per_step], per_step):
            assert all(b > a for a, b in zip(before, after)), "an engine sat out a step"
        # Synchronous (max_staleness=0): each step trained on samples of the weights just
        # published, which reached both engines through the transport, digest-checked.
        assert stats.versions_trained == [[step] * 16 for step in range(3)]
        assert roles.executor.get_all([e.sync(3) for e in roles.engines]) == [3, 3]
        assert roles.bus.served().result() == {"rollout-0": 3, "rollout-1": 3}
    finally:
        roles.shutdown()
