"""A three-node Ray cluster on 127.0.0.1 (`ray.cluster_utils.Cluster`): roles go to the
nodes their custom resources name, and weights reach the engine on another node."""
from __future__ import annotations

import pytest
import ray

from support import small_cfg

pytestmark = pytest.mark.e2e


def _node_of(role) -> str:
    return ray.get(role.actor.__ray_call__.remote(lambda self: ray.get_runtime_context().get_node_id()))


def test_roles_are_placed_on_the_nodes_the_config_names(tmp_path, tiny_model_dir, tiny_tokenizer):
    from ray.cluster_utils import Cluster

    from rlhf_platform.roles.ray_executor import keep_ray_on_loopback
    from rlhf_platform.data import task_rows
    from rlhf_platform.prompts import tokenize_rows
    from rlhf_platform.recipes import online_rl
    from rlhf_platform.recipes.run_roles import start_roles
    from rlhf_platform.roles.ray_executor import RayExecutor

    keep_ray_on_loopback()
    node = dict(node_ip_address="127.0.0.1", object_store_memory=200 * 2**20)
    cluster = Cluster(initialize_head=True, head_node_args=dict(num_cpus=2, include_dashboard=False, **node))
    rollout_node = cluster.add_node(num_cpus=2, resources={"rollout": 1}, **node)
    trainer_node = cluster.add_node(num_cpus=2, resources={"trainer": 2}, **node)
    ray.init(address=cluster.address)
    try:
        cfg = small_cfg(
            "trainer.max_steps=2", "rollout.max_staleness=1", "algo.kl.coef=0.01",
            "cluster=three_nodes", f"ray.address={cluster.address}",
        )
        assert cfg.rollout.resources == {"rollout": 1} and cfg.trainer.num_ranks == 2
        train_rows, _ = task_rows(cfg.task, 0, tmp_path)
        prompts, _ = tokenize_rows(tiny_tokenizer, train_rows, 200)
        roles = start_roles(RayExecutor(cfg.ray), cfg, tiny_model_dir, prompts)
        try:
            assert _node_of(roles.engines[0]) == rollout_node.node_id
            assert [_node_of(t) for t in roles.policy.ranks] == [trainer_node.node_id] * 2
            stats, _ = online_rl.train(roles, cfg)
            assert stats.steps == 2
            # the engine on the rollout node serves the trainer node's weights
            assert roles.engines[0].sync(2).result() == 2
            digests = roles.policy.run("weights_digest")
            assert digests[0] == digests[1]
        finally:
            roles.shutdown()
    finally:
        ray.shutdown()
        cluster.shutdown()
