"""Assembling the roles of one run as named Ray actors, and taking them down."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray

from rlhf_platform.config import Config
from rlhf_platform.roles.advantage_builder import AdvantageBuilder
from rlhf_platform.roles.critic import Critic
from rlhf_platform.roles.group import Placement, start_rank_group, start_role
from rlhf_platform.roles.prompt_queue import PromptQueue
from rlhf_platform.roles.reference import Reference
from rlhf_platform.roles.reward import RewardService
from rlhf_platform.roles.rollout_engine import RolloutEngine
from rlhf_platform.roles.trainer import Trainer
from rlhf_platform.types import Prompt
from rlhf_platform.weight_sync import WeightSyncBus


@dataclass
class Pipeline:
    bus: Any
    queue: Any
    engines: list[Any]
    reward: Any
    reference: Any | None
    builder: Any
    trainers: list[Any]
    critics: list[Any] = field(default_factory=list)  # PPO's value model ranks (algo.advantage=gae)
    cfg: Config | None = None
    model: str = ""
    training_restarts: int = 0

    def actors(self) -> list[Any]:
        singles = [self.bus, self.queue, self.reward, self.reference, self.builder]
        return [a for a in singles if a is not None] + self.engines + self.trainers + self.critics

    def wait_for_restarts(self, timeout_s: float = 900.0) -> None:
        """Block until every engine, the Reward service and the Reference answer again
        (Ray restarts a dead one; calls to it fail while it restarts). Raises when an
        actor is dead for good (out of restarts) or still down after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        for actor in [*self.engines, self.reward, self.reference]:
            while actor is not None:
                try:
                    ray.get(actor.__ray_call__.remote(_ping), timeout=max(1.0, deadline - time.monotonic()))
                    break
                except (ray.exceptions.ActorUnavailableError, ray.exceptions.GetTimeoutError):
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.5)

    def restart_training(self) -> None:
        """Replace the trainer and critic groups (one lost a rank): kill every rank,
        including those blocked in a collective with the dead one, and start fresh ones
        from the base weights (the caller then loads a checkpoint)."""
        for actor in self.trainers + self.critics:
            ray.kill(actor)
        self.training_restarts += 1
        self.trainers, self.critics = start_training(self.cfg, self.model, self.bus, f"-restart{self.training_restarts}")

    def shutdown(self) -> None:
        for actor in self.actors():
            ray.kill(actor)


def _ping(_actor: Any) -> bool:
    return True


def start_pipeline(cfg: Config, model_dir: Path, train_prompts: list[Prompt], train_policy: bool = True) -> Pipeline:
    """Start every role of a run. Engines and trainer ranks start concurrently. Without
    `train_policy` (recipe=rm sampling its pairs) only the sampling roles start."""
    model = str(model_dir)
    bus = start_role(WeightSyncBus, "weight-bus")
    queue = start_role(PromptQueue, "prompt-queue", train_prompts, cfg.task.weights, cfg.run.seed)
    engines = [
        start_role(
            RolloutEngine,
            f"rollout-{i}",
            f"rollout-{i}",
            cfg.rollout.backend,
            model,
            bus,
            placement=Placement(cfg.rollout.num_cpus, cfg.rollout.num_gpus, dict(cfg.rollout.resources)),
            restarts=cfg.ray.actor_restarts,
            cpu_cores=cfg.rollout.cpu_cores,
            dtype=cfg.rollout.dtype,
            max_model_len=cfg.model.max_model_len,
            seed=cfg.run.seed + i,
            kv_cache_gib=cfg.rollout.kv_cache_gib,
            gpu_memory_utilization=cfg.rollout.gpu_memory_utilization,
        )
        for i in range(cfg.rollout.num_engines)
    ]
    reward = start_role(RewardService, "reward", cfg.reward.functions, cfg.reward, restarts=cfg.ray.actor_restarts)
    reference = None
    if train_policy and (cfg.algo.kl_coef > 0 or cfg.algo.name == "dpo"):
        reference = start_role(
            Reference, "reference", model, "float32", cfg.rollout.temperature, cfg.trainer.micro_batch_size,
            restarts=cfg.ray.actor_restarts,
        )
    builder = start_role(
        AdvantageBuilder, "advantage-builder", cfg.rollout.max_staleness, cfg.algo, cfg.rollout.max_new_tokens
    )
    trainers, critics = start_training(cfg, model, bus) if train_policy else ([], [])
    # Engines have been loading while the trainer group formed; wait until they serve.
    ray.get([e.served_version.remote() for e in engines])
    return Pipeline(bus, queue, engines, reward, reference, builder, trainers, critics, cfg, model)


def start_training(cfg: Config, model: str, bus: Any, suffix: str = "") -> tuple[list[Any], list[Any]]:
    """Start the policy's trainer ranks and, for GAE, the critic's; returns (trainers, critics).
    Also used to replace a group that lost a rank (actor names get `suffix`)."""
    loss_agg_constant = cfg.algo.loss_agg_constant or float(cfg.rollout.max_new_tokens)
    trainers = start_rank_group(
        Trainer,
        f"trainer{suffix}",
        cfg.trainer.num_ranks,
        model,
        cfg.trainer,
        cfg.algo,
        cfg.rollout.temperature,
        cfg.rollout.dtype,
        bus,
        seed=cfg.run.seed,
        loss_agg_constant=loss_agg_constant,
        placement=Placement(cfg.trainer.num_cpus, cfg.trainer.num_gpus, dict(cfg.trainer.resources)),
        strategy=cfg.trainer.placement,
        lora=cfg.model.lora,
    )
    critics = []
    if cfg.algo.advantage == "gae":
        critics = start_rank_group(
            Critic,
            f"critic{suffix}",
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
    return trainers, critics
