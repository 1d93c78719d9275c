"""The roles of one run, started through an executor, and taken down at the end."""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlhf_platform.config import Config, RewardFunctionConfig, WeightSyncConfig
from rlhf_platform.versions import WeightVersions
from rlhf_platform.roles.collective import CollectiveTransport
from rlhf_platform.roles.shared_memory import SharedMemoryTransport
from rlhf_platform.roles.advantage_builder import AdvantageBuilder
from rlhf_platform.roles.critic import Critic
from rlhf_platform.roles.executor import Executor, Placement
from rlhf_platform.roles.prompt_queue import PromptQueue
from rlhf_platform.roles.recovering_role import RecoveringRole
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
    shared_group: Any = None  # the trainer ranks' placement group when services share its bundles

    def services(self) -> list[Any]:
        """Roles Ray restarts after a crash (the engines, the Reward and Reference services)."""
        return [role for role in (*self.engines, self.reward, self.reference) if role is not None]

    def score(self, *parts: Any) -> Any:
        """Start scoring sampled trajectories (`parts`: lists or futures of lists): the
        Reward service, then reference log-probs and critic values when the run has
        them (PPO: from critic rank 0). The future of the annotated trajectories."""
        scored = self.reward.score(*parts)
        if self.reference is not None:
            scored = self.reference.annotate(scored)
        if self.critic is not None:
            scored = self.critic.rank0.annotate(scored)
        return scored

    def training_groups(self) -> list[RankGroup]:
        return [g for g in (self.policy, self.critic) if g is not None]

    def restart_training(self) -> None:
        """Replace the trainer and critic groups (one lost a rank) with fresh ones from
        the base weights; the caller then loads a checkpoint."""
        for group in self.training_groups():
            group.restart()
        self.connect_weights()

    def republish_if_needed(self, versions: WeightVersions) -> bool:
        """Publish the trainer's weights again when the bus no longer holds them in a usable
        form: an engine reported the latest version corrupt (its copy failed verification
        twice; the bus takes the same version in place of the bad copy), or the bus
        restarted and lost it. Under the same version when nothing newer was trained."""
        if self.bus is None or self.policy is None:
            return False
        corrupt = self.bus.corrupt_version().result()
        lost = self.bus.latest_version().result() < versions.published
        if not lost and (corrupt is None or corrupt < versions.published):
            return False
        self.policy.publish(versions.mark_published())
        return True

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
                self.executor.kill(role.handle if isinstance(role, RecoveringRole) else role)
        if isinstance(self.transport, SharedMemoryTransport):
            self.transport.close()  # its slot files
        self.executor.release(self.shared_group)


QUEUE_MUTATING = frozenset({"lease", "ack", "nack", "mark_trained", "record_outcomes"})  # the queue's calls that change its state


def mixture_reward_functions(cfg: Config) -> dict[str, list[RewardFunctionConfig]]:
    """The reward functions of each task.mixture dataset that has its own."""
    return {d.name: d.reward_functions for d in cfg.task.mixture if d.reward_functions is not None}


def start_roles(
    executor: Executor, cfg: Config, model_dir: Path, train_prompts: list[Prompt], train_policy: bool = True
) -> RunRoles:
    """Start every role of a run. Engines load while the trainer group forms. Without
    `train_policy` (recipe=rm sampling its pairs) only the sampling roles start."""
    model = str(model_dir)
    restarts = cfg.ray.actor_restarts
    bus = executor.start_role(WeightSyncBus, "weight-bus", restarts=restarts)
    transport = weight_transport(executor, cfg.weight_sync)
    queue = RecoveringRole(
        executor.start_role(
            PromptQueue, "prompt-queue", train_prompts, cfg.task.weights, cfg.run.seed, curriculum=cfg.curriculum,
            mixture={d.name: (d.probability, d.weights) for d in cfg.task.mixture} or None, restarts=restarts,
        ),
        executor, QUEUE_MUTATING, restarts, "live_state", "load_live_state",
    )
    engines = [_start_engine(executor, cfg, model, bus, transport, i) for i in range(cfg.rollout.num_engines)]
    wants_reference = train_policy and (cfg.algo.kl.coef > 0 or cfg.algo.name == "dpo")
    placements = ServicePlacements.of(cfg, wants_reference, train_policy)
    shared_group = placements.reserve(executor, cfg) if train_policy else None
    reward = executor.start_role(
        RewardService, "reward", cfg.reward.functions, cfg.reward, mixture_reward_functions(cfg), restarts=restarts,
        placement=placements.placed(executor, shared_group, "reward"),
    )
    reference = None
    if wants_reference:
        reference = executor.start_role(
            Reference, "reference", model, cfg.reference.dtype, cfg.rollout.temperature, cfg.trainer.micro_batch_size,
            restarts=restarts, placement=placements.placed(executor, shared_group, "reference"),
        )
    lag = max_sample_lag(cfg.rollout.max_staleness, cfg.trainer.sync_every)
    builder = RecoveringRole(
        executor.start_role(
            AdvantageBuilder, "advantage-builder", lag, cfg.algo, cfg.rollout.max_new_tokens, cfg.rollout.stale_tokens,
            restarts=restarts,
        ),
        executor, frozenset({"build"}), restarts,
    )
    policy, critic = start_training(executor, cfg, model, bus, transport, shared_group) if train_policy else (None, None)
    executor.get_all([e.served_version() for e in engines])  # every engine serves
    roles = RunRoles(executor, bus, queue, engines, reward, reference, builder, policy, critic, transport, shared_group)
    roles.connect_weights()
    return roles


@dataclass
class ServicePlacements:
    """What the Reference, the Reward service and the critic ranks reserve, and which of
    them share the trainer ranks' placement group bundles (`colocate_with_trainer`):
    the Reference and Reward share rank 0's, critic rank i shares trainer rank i's. The
    shared bundles are sized for the trainer rank and its guests together."""

    trainer: Placement
    services: dict[str, Placement]  # reference / reward / critic: what one actor reserves
    colocated: dict[str, list[int]]  # service -> the trainer bundles its actors go in

    @classmethod
    def of(cls, cfg: Config, wants_reference: bool, train_policy: bool) -> "ServicePlacements":
        services = {
            "reference": Placement(cfg.reference.num_cpus, cfg.reference.num_gpus, dict(cfg.reference.resources)),
            "reward": Placement(cfg.reward.num_cpus, cfg.reward.num_gpus, dict(cfg.reward.resources)),
            "critic": Placement(cfg.critic.num_cpus, cfg.critic.num_gpus, dict(cfg.critic.resources)),
        }
        colocated: dict[str, list[int]] = {}
        if train_policy:
            if wants_reference and cfg.reference.colocate_with_trainer:
                colocated["reference"] = [0]
            if cfg.reward.colocate_with_trainer:
                colocated["reward"] = [0]
            if cfg.algo.advantage.estimator == "gae" and cfg.critic.colocate_with_trainer:
                colocated["critic"] = list(range(cfg.critic.num_ranks))
        trainer = Placement(cfg.trainer.num_cpus, cfg.trainer.num_gpus, dict(cfg.trainer.resources))
        return cls(trainer, services, colocated)

    def bundles(self, num_ranks: int) -> list[dict[str, float]]:
        """One bundle per trainer rank: the rank's reservation plus its guests'."""
        bundles = [dict(self.trainer.bundle()) for _ in range(num_ranks)]
        for service, indices in self.colocated.items():
            for index in indices:
                for resource, amount in self.services[service].bundle().items():
                    bundles[index][resource] = bundles[index].get(resource, 0.0) + amount
        return bundles

    def reserve(self, executor: Executor, cfg: Config) -> Any:
        """The trainer ranks' placement group, reserved up front when a service shares it
        (it then outlives restarts of the ranks); None otherwise."""
        if not self.colocated:
            return None
        return executor.reserve(self.bundles(cfg.trainer.num_ranks), cfg.trainer.placement, "trainer")

    def placed(self, executor: Executor, group: Any, service: str) -> Placement:
        """Where the Reference or Reward actor goes: its reservation, in trainer rank 0's
        bundle when colocated (critic ranks go through `start_training`)."""
        placement = self.services[service]
        bundles = self.colocated.get(service)
        if group is None or not bundles:
            return placement
        scheduling = executor.in_bundle(group, bundles[0])
        return Placement(placement.num_cpus, placement.num_gpus, dict(placement.resources), scheduling=scheduling)


def weight_transport(executor: Executor, cfg: WeightSyncConfig) -> Any:
    """The transport `weight_sync.transport` names (auto: the executor's own)."""
    if cfg.transport == "shared_memory":
        return SharedMemoryTransport(cfg.shm_root)
    if cfg.transport == "collective":
        # In one process the trainer and the engines share a GPU, which NCCL cannot group.
        backend = "gloo" if cfg.backend == "auto" and executor.name == "inprocess" else cfg.backend
        return CollectiveTransport(backend, cfg.bucket_mb, cfg.timeout_s)
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
        per_request_seeds=cfg.rollout.streaming,
    )


def start_training(
    executor: Executor, cfg: Config, model: str, bus: Any, transport: Any, shared_group: Any = None
) -> tuple[RankGroup, RankGroup | None]:
    """The policy's trainer ranks and, for GAE, the critic's: (policy, critic or None).
    With `shared_group` (services colocated) trainer rank i sits in its bundle i, and so
    does critic rank i when the critic is colocated."""
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
        group=shared_group,
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
            group=shared_group if cfg.critic.colocate_with_trainer else None,
        )
    return policy, critic
