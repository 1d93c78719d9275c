"""GRPO through real Ray, two real vLLM engines and a DeepSpeed trainer, with weights
travelling by each transport that is not the object store: shared memory (tmpfs slots
the engines map) and collective (a gloo group of trainer rank 0 and both engines).
The shared-memory run also places the Reference in trainer rank 0's placement group
bundle (`reference.colocate_with_trainer`), sharing its CPU reservation."""
from __future__ import annotations

import pytest
import ray

from support import small_cfg

pytestmark = pytest.mark.e2e


COLOCATED_REFERENCE = ["algo.kl.coef=0.01", "trainer.num_cpus=1", "reference.num_cpus=0.5", "reference.colocate_with_trainer=true"]


def placement_of(role) -> tuple[str, list[str]]:
    """(its placement group id, the names of the resources it holds) inside the actor."""
    def ask(_role):
        context = ray.get_runtime_context()
        return context.get_placement_group_id(), sorted(context.get_assigned_resources())

    return ray.get(role.actor.__ray_call__.remote(ask))


@pytest.mark.parametrize("transport", ["shared_memory", "collective"])
def test_grpo_with_two_engines_over_the_transport(ray_local, tmp_path, tiny_model_dir, tiny_tokenizer, transport):
    from rlhf_platform.data import task_rows
    from rlhf_platform.prompts import tokenize_rows
    from rlhf_platform.recipes import online_rl
    from rlhf_platform.recipes.run_roles import start_roles
    from rlhf_platform.roles.ray_executor import RayExecutor

    cfg = small_cfg(
        "trainer.max_steps=3", "rollout.num_engines=2", "rollout.max_staleness=0", f"weight_sync.transport={transport}",
        "reward.functions=[{name:brevity,weight:1.0}]", *(COLOCATED_REFERENCE if transport == "shared_memory" else []),
    )
    train_rows, _ = task_rows(cfg.task, 0, tmp_path)
    prompts, _ = tokenize_rows(tiny_tokenizer, train_rows, 200)
    roles = start_roles(RayExecutor(cfg.ray), cfg, tiny_model_dir, prompts)
    tokens = lambda: [ray.get(e.actor.__ray_call__.remote(lambda role: role.tokens_generated)) for e in roles.engines]  # noqa: E731
    per_step = []
    try:
        if transport == "shared_memory":  # the Reference sits in trainer rank 0's bundle, beside it
            group, held = placement_of(roles.reference)
            assert group is not None and group == placement_of(roles.policy.rank0)[0] and held == ["CPU"]
            assert ray.util.placement_group_table()[group]["bundles"] == {0: {"CPU": 1.5}}  # trainer 1 + reference 0.5
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
