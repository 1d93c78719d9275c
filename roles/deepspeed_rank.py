"""What every role that trains a model on DeepSpeed ranks shares (Trainer, Critic,
RewardModelTrainer): `DeepSpeedRank.setup` (pin threads, seed, join the process group,
build a ZeRO engine around the role's model), one optimizer step over micro-batches,
and saving / loading a rank's engine state."""
from __future__ import annotations

import os
import time
from datetime import timedelta
from typing import Any, Callable

import torch

from rlhf_platform.batching import GroupBatch, collate_group, prompt_groups
from rlhf_platform.config import TrainerConfig
from rlhf_platform.modeling import pad_token_id, resolve_dtype, use_cores
from rlhf_platform.roles.executor import rendezvous_store
from rlhf_platform.types import UpdatePlan

# A micro-batch's loss and its statistics: numbers or 0-dim tensors on the role's
# device, read (one device sync) only after the backward pass has been queued.
Stats = dict[str, "float | torch.Tensor"]
MicroLoss = Callable[[list], tuple[torch.Tensor, Stats]]
# (chunk, the mini-batch's loss normaliser, epoch) -> (loss, stats)
EpochLoss = Callable[[list, float, int], tuple[torch.Tensor, Stats]]
PER_EPOCH = ("loss", "ratio_mean", "ratio_max", "approx_kl", "clip_fraction")  # also logged per epoch


def deepspeed_config(cfg: TrainerConfig, world_size: int) -> dict[str, Any]:
    """The DeepSpeed config for one optimizer step per `optimizer_step` call.

    Gradient accumulation is unmanaged: the role calls backward once per micro-batch
    and `step()` once, so batches whose size varies (after the freshness filter)
    still make exactly one update.
    """
    return {
        "train_micro_batch_size_per_gpu": cfg.micro_batch_size,
        "gradient_accumulation_steps": 1,
        "train_batch_size": cfg.micro_batch_size * world_size,
        "managed_gradient_accumulation": False,
        "gradient_clipping": cfg.grad_clip,
        "zero_optimization": {"stage": cfg.zero_stage},
        "bf16": {"enabled": resolve_dtype(cfg.dtype) == "bfloat16"},
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }


def join_process_group(backend: str = "auto") -> tuple[int, int]:
    """`deepspeed.init_distributed` (auto: NCCL on GPU, gloo on CPU) without DeepSpeed's
    shared-memory all-reduce op; returns (rank, world size). The rendezvous store
    listens on MASTER_ADDR only (`rendezvous_store`), not on every address.

    On CPU DeepSpeed JIT-compiles that op (used only by inference all-reduce) under a
    file lock in ~/.cache/torch_extensions; a rank killed mid-compile leaves the lock
    behind and every later process waits on it forever. Training all-reduces through
    the gloo or NCCL process group and never needs it.
    """
    import deepspeed
    import deepspeed.ops

    if backend == "auto":
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
    if not torch.distributed.is_initialized():  # DeepSpeed then adopts the group
        host, rank, world_size = os.environ["MASTER_ADDR"], int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        if host == "localhost" or host.startswith("127.") or host == "::1":
            os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")  # gloo's pair sockets on loopback too
        timeout = timedelta(minutes=30)
        store = rendezvous_store(host, int(os.environ["MASTER_PORT"]), world_size, rank == 0, timeout)
        torch.distributed.init_process_group(backend, store=store, rank=rank, world_size=world_size, timeout=timeout)
    deepspeed.init_distributed(dist_backend=backend, auto_mpi_discovery=False)
    return torch.distributed.get_rank(), torch.distributed.get_world_size()


def start_engine(model: torch.nn.Module, cfg: TrainerConfig, lr: float, world_size: int) -> tuple[Any, Any]:
    """A DeepSpeed ZeRO engine around `model` with torch's AdamW at `lr` (DeepSpeed's
    fused optimizers need a compiler build on CPU) over the trainable parameters (all of
    them, or LoRA adapters only); returns (engine, optimizer)."""
    import deepspeed

    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=lr, weight_decay=cfg.weight_decay)
    engine, optimizer, _, _ = deepspeed.initialize(
        model=model, optimizer=optimizer, config=deepspeed_config(cfg, world_size)
    )
    if world_size == 1 and cfg.zero_stage == 0:
        # Alone, there is nothing to all-reduce; DeepSpeed would still flatten every
        # gradient into a buffer, "reduce" it and copy it back at each step. (ZeRO
        # stages 1-2 move gradients into their partitions on that path: keep it.)
        engine.enable_backward_allreduce = False
    return engine, optimizer


def optimizer_step(
    engine: Any, optimizer: Any, chunks: list[list], micro_loss: MicroLoss, prefix: str = "train"
) -> dict[str, float]:
    """Backward on each chunk's loss, then one optimizer step.

    Metrics are averaged over the chunks reporting them (`*_max` take the max) except
    the loss, which is summed (each chunk's loss is its share of the batch mean). A rank
    with no chunk still backwards a zero loss, so it joins the gradient reduction of
    the other ranks. Keys are `{prefix}/name`.
    """
    started = time.perf_counter()
    engine.train()
    reported: list[dict[str, float]] = []
    for chunk in chunks or [[]]:
        if chunk:
            loss, stats = micro_loss(chunk)
        else:
            loss, stats = sum(p.sum() * 0.0 for p in engine.module.parameters()), {}
        engine.backward(loss, scale_wrt_gas=False)
        reported.append({key: float(value) for key, value in stats.items()})
    unclipped_norm = _stage0_grad_norm(engine)
    engine.step()
    metrics = merge_metrics(reported)
    metrics["loss"] = sum(stats.get("loss", 0.0) for stats in reported)
    metrics["step_seconds"] = time.perf_counter() - started
    metrics["lr"] = float(optimizer.param_groups[0]["lr"])
    norm = engine.get_global_grad_norm()
    metrics["grad_norm"] = float(norm if norm is not None else unclipped_norm or 0.0)
    return {f"{prefix}/{k}": v for k, v in metrics.items()}


def merge_metrics(reported: list[dict[str, float]]) -> dict[str, float]:
    """Metrics of several parts (chunks, optimizer steps, ranks) in one: each key's mean
    over the parts that report it; keys ending in `_max` take the max, `_seconds` the sum."""
    merged: dict[str, float] = {}
    for key in dict.fromkeys(k for stats in reported for k in stats):
        values = [stats[key] for stats in reported if key in stats]
        if key.endswith("_max"):
            merged[key] = max(values)
        elif key.endswith("_seconds"):
            merged[key] = sum(values)
        else:
            merged[key] = sum(values) / len(values)
    return merged


def run_update(
    engine: Any,
    optimizer: Any,
    plan: UpdatePlan,
    micro_batch_size: int,
    micro_loss: EpochLoss,
    prefix: str = "train",
    stop_after: Callable[[list[dict[str, float]]], bool] | None = None,
) -> dict[str, float]:
    """`plan.epochs` passes over the plan's mini-batches, one optimizer step each (every
    rank steps the same number of times: an empty shard still joins the reduction).
    `stop_after(epoch's step metrics)` returning True ends the update early (the same
    answer on every rank: it must agree across them).

    Metrics: each key's mean over all optimizer steps (`*_max`: max; `lr`: the last),
    the loss, ratio, approximate KL and clip fraction of each epoch as
    `{prefix}/epoch{e}/name`, and `{prefix}/epochs`, `{prefix}/optimizer_steps`.
    """
    steps: list[dict[str, float]] = []
    per_epoch: dict[str, float] = {}
    for epoch in range(plan.epochs):
        epoch_steps = [
            optimizer_step(
                engine, optimizer, prompt_groups(mini.trajectories, micro_batch_size),
                lambda chunk, denominator=denominator: micro_loss(chunk, denominator, epoch), prefix,
            )
            for mini, denominator in zip(plan.mini_batches, plan.denominators)
        ]
        steps += epoch_steps
        merged = merge_metrics(epoch_steps)
        per_epoch.update({f"{prefix}/epoch{epoch}/{name}": merged[f"{prefix}/{name}"] for name in PER_EPOCH if f"{prefix}/{name}" in merged})
        if stop_after is not None and epoch + 1 < plan.epochs and stop_after(epoch_steps):
            break
    metrics = merge_metrics(steps)
    metrics[f"{prefix}/lr"] = steps[-1][f"{prefix}/lr"]
    metrics.update(per_epoch)
    metrics[f"{prefix}/epochs"] = float(epoch + 1)
    metrics[f"{prefix}/optimizer_steps"] = float(len(steps))
    return metrics


def sum_over_ranks(values: list[float]) -> list[float]:
    """Each value summed over the ranks of the process group (all ranks call it together)."""
    if not torch.distributed.is_initialized() or torch.distributed.get_world_size() == 1:
        return values
    on_gpu = torch.distributed.get_backend() == "nccl"  # NCCL reduces GPU tensors only
    device = torch.device("cuda", torch.cuda.current_device()) if on_gpu else torch.device("cpu")
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    torch.distributed.all_reduce(tensor)
    return tensor.cpu().tolist()


def _stage0_grad_norm(engine: Any) -> float | None:
    """The gradient norm before clipping, which DeepSpeed tracks only under ZeRO: without
    it (stage 0) we take it ourselves (on one rank the gradients are already final; on
    several, this rank's before the all-reduce)."""
    if engine.zero_optimization_stage() != 0:
        return None
    grads = [p.grad for p in engine.module.parameters() if p.grad is not None]
    return float(torch.nn.utils.get_total_norm(grads)) if grads else 0.0


ENGINE_TAG = "state"  # DeepSpeed's tag (sub-directory) inside a checkpoint's engine directory


def save_engine_state(engine: Any, directory: str, client_state: dict[str, Any]) -> None:
    """Write this rank's DeepSpeed state (module, optimizer, scheduler; its ZeRO shard)
    into `directory` with `client_state` and the rank's torch RNG state. Every rank of
    the group calls it together; ranks must share the filesystem."""
    state = {**client_state, "torch_rng_state": torch.get_rng_state()}
    engine.save_checkpoint(directory, tag=ENGINE_TAG, client_state=state, save_latest=False)


def load_engine_state(engine: Any, directory: str) -> dict[str, Any]:
    """Restore what `save_engine_state` wrote (same world size and ZeRO stage); returns
    the client state. Every rank of the group calls it together."""
    path, client_state = engine.load_checkpoint(
        directory, tag=ENGINE_TAG, load_optimizer_states=True, load_lr_scheduler_states=True
    )
    if path is None or client_state is None:
        raise FileNotFoundError(f"{directory}: no DeepSpeed state with tag {ENGINE_TAG!r}")
    torch.set_rng_state(client_state.pop("torch_rng_state"))
    return client_state


class DeepSpeedRank:
    """One data-parallel rank of a model trained with DeepSpeed. A role sets
    `model_dir`, `engine_cfg` (ZeRO stage, micro-batch, precision), `lr` and `seed` in
    its constructor and implements `build_model()`; the rank group calls `setup()`
    once the torch.distributed environment is set."""

    model_dir: str
    engine_cfg: TrainerConfig
    lr: float
    seed: int = 0
    cpu_cores: list[int] | None = None  # pin the rank to these cores of its node (None: every core)

    def build_model(self) -> torch.nn.Module:
        raise NotImplementedError

    def setup(self) -> int:
        """Join the process group and build the engine; returns this rank."""
        use_cores(self.engine_cfg.num_threads, self.cpu_cores)
        torch.manual_seed(self.seed)  # a fresh head is the same on every rank and run
        self.rank, self.world_size = join_process_group(self.engine_cfg.dist_backend)
        self.pad_id = pad_token_id(self.model_dir)
        self.engine, self.optimizer = start_engine(self.build_model(), self.engine_cfg, self.lr, self.world_size)
        self.device = torch.device(self.engine.device)  # DeepSpeed placed the model: cuda:LOCAL_RANK or cpu
        return self.rank

    def collate(self, chunk: list) -> GroupBatch:
        """A group's tensors on this rank's device: the rank's one input boundary."""
        return collate_group(chunk, self.pad_id).to(self.device)

    def set_lr(self, lr: float) -> None:
        """The learning rate of every later step."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr
