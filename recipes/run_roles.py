"""The roles of one run, started through an executor, and taken down at the end."""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlhf_platform.config import Config, WeightSyncConfig
from rlhf_platform.roles.collective import CollectiveTransport
from rlhf_platform.roles.shared_memory import SharedMemoryTransport
from rlhf_platform.roles.advantage_builder import AdvantageBuilder
from rlhf_platform.roles.critic import Critic
from rlhf_platform.roles.executor import Executor, Placement
from rlhf_platform.roles.prompt_queue import PromptQueue
from rlhf_platform.roles.rank_group import RankGroup
from rlhf_platform.roles.reference import Reference
from rlhf_platform.roles.reward import RewardService
from rlhf_platform.roles.rollout_engine import RolloutEngine
from rlhf_platform.roles.trainer import Trainer
from rlhf_platform.types import Prompt
from rlhf_platform.config import max_sample_lag
from rlhf_platform.weight_sync import WeightSyncBus


@dataclass
class RunRoles:
    """Handles on the roles of a run (the boxes of the data-path diagram)."""

    executor: Executor
    bus: Any | None
    queue: Any | None
    engines: list[Any]
    reward: Any | None
    reference: Any | None
    builder: Any | None
    policy: RankGroup | None  # the trainer ranks
    critic: RankGroup | None = None  # PPO's value model ranks (algo.advantage.estimator=gae)
    transport: Any = None  # how published weights reach the engines (weight_sync.transport)

    def services(self) -> list[Any]:
        """Roles Ray restarts after a crash (the engines, the Reward and Reference services)."""
        return [role for role in (*self.engines, self.reward, self.reference) if role is not None]

    def training_groups(self) -> list[RankGroup]:
        return [g for g in (self.policy, self.critic) if g is not None]

    def restart_training(self) -> None:
        """Replace the trainer and critic groups (one lost a rank) with fresh ones from
        the base weights; the caller then loads a checkpoint."""
        for group in self.training_groups():
            group.restart()
        self.connect_weights()

    def connect_weights(self) -> None:
        """The collective transport: (re)form the weight group of trainer rank 0 and every
        engine, at start and after any of them restarted. Other transports need nothing."""
        if not isinstance(self.transport, CollectiveTransport) or self.policy is None:
            return
        host, port = self.executor.rendezvous(self.policy.rank0)
        world_size = 1 + len(self.engines)
        self.executor.get_all(
            [self.policy.rank0.attach_weights(0, world_size, host, port)]
            + [engine.attach_weights(i + 1, world_size, host, port) for i, engine in enumerate(self.engines)]
        )

    def shutdown(self) -> None:
        if isinstance(self.transport, CollectiveTransport) and self.policy is not None:
            self.policy.rank0.close_weights().wait()  # the engines' receivers stop
        for group in self.training_groups():
            group.kill()
        for role in [self.bus, self.queue, self.builder, *self.services()]:
            if role is not None:
                self.executor.kill(role)
        if isinstance(self.transport, SharedMemoryTransport):
            self.transport.close()  # its slot files


def start_roles(
    executor: Executor, cfg: Config, model_dir: Path, train_prompts: list[Prompt], train_policy: bool = True
) -> RunRoles:
    """Start every role of a run. Engines load while the trainer group forms. Without
    `train_policy` (recipe=rm sampling its pairs) only the sampling roles start."""
    model = str(model_dir)
    restarts = cfg.ray.actor_restarts
    bus = executor.start_role(WeightSyncBus, "weight-bus")
    transport = weight_transport(executor, cfg.weight_sync)
    queue = executor.start_role(PromptQueue, "prompt-queue", train_prompts, cfg.task.weights, cfg.run.seed)
    engines = [_start_engine(executor, cfg, model, bus, transport, i) for i in range(cfg.rollout.num_engines)]
    reward = executor.start_role(RewardService, "reward", cfg.reward.functions, cfg.reward, restarts=restarts)
    reference = None
    if train_policy and (cfg.algo.kl.coef > 0 or cfg.algo.name == "dpo"):
        reference = executor.start_role(
            Reference, "reference", model, cfg.trainer.dtype, cfg.rollout.temperature, cfg.trainer.micro_batch_size,
            restarts=restarts,
        )
    lag = max_sample_lag(cfg.rollout.max_staleness, cfg.trainer.sync_every)
    builder = executor.start_role(AdvantageBuilder, "advantage-builder", lag, cfg.algo, cfg.rollout.max_new_tokens)
    policy, critic = start_training(executor, cfg, model, bus, transport) if train_policy else (None, None)
    executor.get_all([e.served_version() for e in engines])  # every engine serves
    roles = RunRoles(executor, bus, queue, engines, reward, reference, builder, policy, critic, transport)
    roles.connect_weights()
    return roles


def weight_transport(executor: Executor, cfg: WeightSyncConfig) -> Any:
    """The transport `weight_sync.transport` names (auto: the executor's own)."""
    if cfg.transport == "shared_memory":
        return SharedMemoryTransport(cfg.shm_root)
    if cfg.transport == "collective":
        return CollectiveTransport(bucket_mb=cfg.bucket_mb, timeout_s=cfg.timeout_s)
    if cfg.transport == "object_store":
        from rlhf_platform.roles.object_store import ObjectStoreTransport

        return ObjectStoreTransport()
    return executor.transport()


def _start_engine(executor: Executor, cfg: Config, model: str, bus: Any, transport: Any, i: int) -> Any:
    return executor.start_role(
        RolloutEngine,
        f"rollout-{i}",
        f"rollout-{i}",
        cfg.rollout.backend,
        model,
        bus,
        copy.deepcopy(transport),  # each role its own, as in its own process (in-process roles share one)
        placement=Placement(cfg.rollout.num_cpus, cfg.rollout.num_gpus, dict(cfg.rollout.resources)),
        restarts=cfg.ray.actor_restarts,
        cpu_cores=cfg.rollout.cpu_cores,
        dtype=cfg.rollout.dtype,
        max_model_len=cfg.model.max_model_len,
        seed=cfg.run.seed + i,
        kv_cache_gib=cfg.rollout.kv_cache_gib,
        gpu_memory_utilization=cfg.rollout.gpu_memory_utilization,
        tensor_parallel_size=cfg.rollout.tensor_parallel_size,
    )


def start_training(executor: Executor, cfg: Config, model: str, bus: Any, transport: Any) -> tuple[RankGroup, RankGroup | None]:
    """The policy's trainer ranks and, for GAE, the critic's: (policy, critic or None)."""
    loss_agg_constant = cfg.algo.policy.loss_agg_constant or float(cfg.rollout.max_new_tokens)
    policy = RankGroup(
        executor,
        Trainer,
        "trainer",
        cfg.trainer.num_ranks,
        model,
        cfg.trainer,
        cfg.algo,
        cfg.rollout.temperature,
        cfg.rollout.dtype,
        bus,
        copy.deepcopy(transport),
        seed=cfg.run.seed,
        loss_agg_constant=loss_agg_constant,
        placement=Placement(cfg.trainer.num_cpus, cfg.trainer.num_gpus, dict(cfg.trainer.resources)),
        strategy=cfg.trainer.placement,
        lora=cfg.model.lora,
    )
    critic = None
    if cfg.algo.advantage.estimator == "gae":
        critic = RankGroup(
            executor,
            Critic,
            "critic",
            cfg.critic.num_ranks,
            model,
            cfg.trainer,
            cfg.critic,
            cfg.algo,
            seed=cfg.run.seed,
            loss_agg_constant=loss_agg_constant,
            placement=Placement(cfg.critic.num_cpus, cfg.critic.num_gpus, dict(cfg.critic.resources)),
            strategy=cfg.trainer.placement,
        )
    return policy, critic
