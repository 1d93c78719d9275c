"""The typed config schema, and its validation.

Hydra composes `conf/`; the dataclasses here are registered as the base schema, so an
unknown key is a Hydra error naming it. `validate` then checks values and ranges and
raises `ConfigError` naming the key and what is allowed. Nothing here rewrites a
user's setting.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf


class ConfigError(ValueError):
    """A config value that is not allowed; the message names the key."""


@dataclass
class RunConfig:
    name: str = "run"  # run directory name under `root`
    root: str = "runs"  # where run directories live
    seed: int = 0  # seeds data order, sampling and model init


@dataclass
class RayConfig:
    address: Optional[str] = None  # None: start a local cluster on 127.0.0.1; "auto" or host:port: join one
    num_cpus: Optional[int] = None  # logical CPUs of a local cluster (None: Ray's count)
    include_dashboard: bool = True  # serve the dashboard (local cluster only)
    dashboard_host: str = "127.0.0.1"  # bind address of the dashboard
    metrics_export_port: Optional[int] = None  # Prometheus port of the local node's role metrics (None: Ray picks)
    actor_restarts: int = 3  # times Ray restarts a crashed rollout engine, reward or reference actor


@dataclass
class TinyModelConfig:
    layers: int = 2
    hidden: int = 128
    heads: int = 4
    kv_heads: int = 2
    intermediate: int = 256
    vocab_size: int = 400  # target BPE vocabulary of the locally trained tokenizer
    seed: int = 0


@dataclass
class LoraConfig:
    enabled: bool = False  # train LoRA adapters (peft) instead of every weight; engines get merged weights
    rank: int = 16  # adapter rank r
    alpha: float = 32.0  # scaling numerator: updates are B·A·alpha/r
    dropout: float = 0.0
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )  # names of the linear layers that get adapters


@dataclass
class ModelConfig:
    name: str = "smollm2_135m"  # smollm2_135m | tiny | local (set by model.path)
    path: Optional[str] = None  # a local HF model directory; overrides `name`
    max_model_len: int = 512  # context length the rollout engine serves
    tiny: TinyModelConfig = field(default_factory=TinyModelConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)


@dataclass
class TaskConfig:
    name: str = "arithmetic"  # arithmetic | dataset (user files in train_path / eval_path)
    digits: list[int] = field(default_factory=lambda: [1, 2])  # operand digits of each difficulty level
    weights: list[float] = field(default_factory=lambda: [0.5, 0.5])  # sampling weight of each level
    train_size: int = 2000  # training prompts per level
    eval_size: int = 100  # held-out prompts per level
    template: str = "What is {a} + {b}? Reply with only the number."
    train_path: Optional[str] = None  # jsonl, parquet or an HF dataset directory
    eval_path: Optional[str] = None
    prompt_field: str = "prompt"
    answer_field: str = "answer"
    pairs_path: Optional[str] = None  # DPO/RM preference pairs (jsonl, parquet, HF dir); None: built from the task
    chosen_field: str = "chosen"
    rejected_field: str = "rejected"
    on_bad_row: str = "error"  # error | skip (skipped rows are counted)


@dataclass
class RolloutConfig:
    backend: str = "vllm"  # vllm | hf
    num_engines: int = 1
    prompts_per_step: int = 8
    samples_per_prompt: int = 8
    max_new_tokens: int = 24
    temperature: float = 1.0
    top_p: float = 1.0
    dtype: str = "auto"  # weights the engine serves: auto (bf16 on GPU, fp32 on CPU) | bfloat16 | float32
    kv_cache_gib: float = 1.0  # VLLM_CPU_KVCACHE_SPACE on CPU
    gpu_memory_utilization: float = 0.5  # used on GPUs only
    max_staleness: int = 1  # versions rollout may run ahead of training (0 = synchronous)
    num_cpus: float = 0.0  # Ray CPUs each engine actor reserves
    num_gpus: float = 0.0  # GPUs each engine actor reserves
    cpu_cores: Optional[list[int]] = None  # pin engines to these cores of their node (None: every core)
    resources: dict[str, float] = field(default_factory=dict)  # custom Ray resources of each engine, e.g. {rollout: 1}


@dataclass
class TrainerConfig:
    max_steps: int = 12
    num_ranks: int = 1  # data-parallel DeepSpeed ranks, one Ray actor each
    zero_stage: int = 2  # 0 (no partitioning: best for one rank) | 1 | 2 | 3
    lr: float = 1.0e-5
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    micro_batch_size: int = 16  # sequences per forward/backward
    dtype: str = "auto"  # training precision: auto (bf16 on GPU, fp32 on CPU) | bfloat16 | float32
    dist_backend: str = "auto"  # auto (nccl on GPU, gloo on CPU) | gloo | nccl
    sync_every: int = 1  # publish weights every k optimizer steps
    group_restarts: int = 2  # times a trainer group that lost a rank is restarted from the last checkpoint
    num_threads: Optional[int] = None  # torch threads per rank (None: every core the rank may run on)
    cpu_cores: Optional[list[int]] = None  # pin ranks to these cores of their node (None: every core)
    num_cpus: float = 0.0  # Ray CPUs each rank reserves
    num_gpus: float = 0.0  # GPUs each rank reserves (1 on a GPU cluster)
    resources: dict[str, float] = field(default_factory=dict)  # custom Ray resources of each rank, e.g. {trainer: 1}
    placement: str = "PACK"  # placement group of the ranks: PACK | SPREAD | STRICT_PACK | STRICT_SPREAD


@dataclass
class AlgoConfig:
    name: str = "grpo"  # grpo | dapo | gspo | ppo (all use the GRPO driver) | dpo | rm
    # group_norm: (r - group mean) / group std (GRPO) | dr_grpo: r - group mean |
    # rloo: r - mean of the other samples | reinforce_pp: r whitened over the whole batch |
    # gae: per-token GAE from the critic's values (PPO; starts the Critic role)
    advantage: str = "group_norm"
    norm_eps: float = 1.0e-6  # added to the std of group_norm, reinforce_pp and GAE whitening
    gamma: float = 1.0  # GAE / REINFORCE++ discount per token
    lam: float = 0.95  # GAE lambda
    whiten_advantages: bool = True  # GAE: normalise advantages over the batch's tokens
    value_clip: Optional[float] = 0.2  # PPO value clipping around the rollout-time values (None: off)
    entropy_coef: float = 0.0  # entropy bonus weight in the policy loss (0: off, skips the entropy pass)
    policy_loss: str = "ppo_clip"  # ppo_clip: per-token ratio | gspo: sequence ratio (length-normalised)
    clip_eps_low: float = 0.2  # ratio clipped to [1 - low, 1 + high]
    clip_eps_high: float = 0.2  # DAPO clip-higher: high > low
    dual_clip: Optional[float] = None  # dual-clip PPO constant c > 1 for negative advantages (None: off)
    kl_coef: float = 0.0  # KL-to-reference weight (initial value if adaptive); 0 skips the Reference service
    kl_estimator: str = "k3"  # k1 | k2 | k3
    kl_mode: str = "loss"  # loss: a KL term in the policy loss (GRPO) | reward: per-token reward penalty (PPO)
    kl_target: Optional[float] = None  # adaptive KL controller target per sequence (kl_mode=reward; None: fixed coef)
    kl_horizon: float = 10000.0  # adaptive KL controller horizon, in samples
    tis_cap: Optional[float] = 2.0  # truncated importance sampling cap vs behaviour logprobs (None: off)
    # token_mean: all tokens of the batch equal (DAPO) | seq_mean_token_mean: each sequence
    # equal (GRPO paper) | seq_sum_const: token sums / loss_agg_constant, mean over sequences (Dr. GRPO)
    loss_agg: str = "token_mean"
    loss_agg_constant: Optional[float] = None  # seq_sum_const divisor (None: rollout.max_new_tokens)
    overlong_buffer: int = 0  # DAPO soft overlong penalty over the last N tokens before max_new_tokens (0: off)
    overlong_penalty: float = 1.0  # weight of that penalty (reward falls by up to this much)
    dynamic_sampling: bool = False  # DAPO: drop groups whose rewards are all equal, sample more prompts
    max_sampling_rounds: int = 3  # extra rollouts per step at most when dynamic_sampling tops a batch up
    # DPO (recipe=dpo): offline, against the Reference's logprobs
    dpo_beta: float = 0.1  # strength of the implicit KL to the reference
    dpo_loss: str = "sigmoid"  # sigmoid (DPO) | ipo
    dpo_label_smoothing: float = 0.0  # conservative DPO: assumed fraction of flipped labels (sigmoid only)
    pairs_per_step: int = 16  # preference pairs per optimizer step
    pair_prompts: int = 256  # built-in pairs: task prompts sampled (rollout.samples_per_prompt each) to find pairs
    rm_held_out: float = 0.1  # recipe=rm: share of pairs held out for pairwise accuracy


@dataclass
class CriticConfig:
    """The PPO critic (started when algo.advantage=gae). Engine settings (ZeRO stage,
    micro-batch, precision) are the trainer's; model, learning rate and ranks are its own."""

    model_path: Optional[str] = None  # HF directory for the value model's backbone (None: the policy's)
    lr: float = 1.0e-5
    num_ranks: int = 1  # data-parallel DeepSpeed ranks of the critic
    num_cpus: float = 0.0  # Ray CPUs each critic rank reserves
    num_gpus: float = 0.0
    resources: dict[str, float] = field(default_factory=dict)
    # step the critic while the policy steps (their own devices), or after it (sharing cores)
    train_concurrently: bool = True


@dataclass
class RewardFunctionConfig:
    name: str = "math_answer"  # a function in rlhf_platform.rewards, or reward_model (a trained one at `path`)
    weight: float = 1.0
    path: Optional[str] = None  # reward_model only: the HF directory recipe=rm saved


@dataclass
class RewardConfig:
    functions: list[RewardFunctionConfig] = field(default_factory=lambda: [RewardFunctionConfig()])
    timeout_s: float = 60.0  # a reward function call that takes longer is abandoned and scored `fallback`
    fallback: float = 0.0  # the score of a sample whose reward function raised or timed out
    cache_size: int = 100_000  # (prompt, reply, function) scores remembered; 0: no cache


@dataclass
class EvalConfig:
    before: bool = True  # evaluate the held-out split before training
    after: bool = True  # ... and after
    max_new_tokens: int = 24


@dataclass
class LoggerConfig:
    backend: str = "wandb"  # wandb | none (metrics.jsonl is always written)
    project: str = "rlhf_platform"
    mode: str = "auto"  # auto (online when WANDB_API_KEY is set, else offline; `wandb sync` later) | offline | online
    progress: bool = True  # progress bar on stderr


@dataclass
class CheckpointConfig:
    every: int = 0  # save a checkpoint every N optimizer steps (0: never; the gate also saves at its steps)
    keep_last: int = 3  # checkpoints kept on disk besides promoted ones and the run's head
    registry_root: Optional[str] = None  # directory of registry.sqlite (shareable by runs); None: the run directory


@dataclass
class GateConfig:
    every: int = 0  # every N steps: checkpoint, evaluate on held-out prompts, compare with the champion (0: off)
    eval_prompts: Optional[int] = None  # held-out prompts the gate evaluates (None: all of them)
    accuracy_tolerance: float = 0.02  # pass: accuracy >= champion's - this
    reward_tolerance: Optional[float] = None  # pass: mean held-out reward >= champion's - this (None: not gated)
    max_kl: Optional[float] = None  # pass: mean per-token KL to the reference since the last gate <= this
    min_entropy: Optional[float] = None  # pass: mean token entropy since the last gate >= this
    max_length_drift: Optional[float] = 0.5  # pass: |reply length / champion's - 1| <= this
    on_fail: str = "rollback"  # rollback (restore the champion, continue) | stop | reject (record, continue)
    rollback_lr_factor: float = 1.0  # multiply the learning rate by this after each rollback
    # divergence, checked every step (with the gate on): any of these rolls back like a failed gate
    divergence_max_kl: float = 5.0  # per-token KL to the reference above this: KL explosion
    divergence_min_entropy: float = 0.0  # token entropy below this: entropy collapse (0: off)
    divergence_reward_drop: float = 0.8  # reward below (1 - this) x its mean over the window: reward collapse
    divergence_reward_window: int = 4  # steps in that mean
    divergence_reward_min_baseline: float = 0.05  # ... watched only once that mean is above this


@dataclass
class FaultConfig:
    """Fault injection, to see the guard and the recovery paths act (tests, drills)."""

    lr_spike_step: Optional[int] = None  # this step runs at lr x lr_spike_factor (a bad update)
    lr_spike_factor: float = 1000.0


@dataclass
class Config:
    run: RunConfig = field(default_factory=RunConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    algo: AlgoConfig = field(default_factory=AlgoConfig)
    critic: CriticConfig = field(default_factory=CriticConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    gate: GateConfig = field(default_factory=GateConfig)
    faults: FaultConfig = field(default_factory=FaultConfig)
    resume: Optional[str] = None  # latest | a registry version id: continue run.name from that checkpoint


def _one_of(key: str, value: Any, allowed: tuple) -> None:
    if value not in allowed:
        raise ConfigError(f"{key}={value!r} is not allowed; choose one of {', '.join(map(str, allowed))}")


def _at_least(key: str, value: float, low: float) -> None:
    if value < low:
        raise ConfigError(f"{key}={value!r} is not allowed; it must be >= {low}")


def validate(cfg: Config) -> Config:
    """Check values the schema's types cannot; raise ConfigError naming the key."""
    from rlhf_platform import rewards  # late imports: rewards pull in math-verify, losses torch
    from rlhf_platform.algos.losses import LOSS_AGG_MODES

    _one_of("model.name", cfg.model.name, ("smollm2_135m", "tiny", "local"))
    _one_of("task.name", cfg.task.name, ("arithmetic", "dataset"))
    _one_of("task.on_bad_row", cfg.task.on_bad_row, ("error", "skip"))
    if len(cfg.task.digits) != len(cfg.task.weights):
        raise ConfigError(
            f"task.weights has {len(cfg.task.weights)} entries but task.digits has {len(cfg.task.digits)}; give one weight per level"
        )
    for i, d in enumerate(cfg.task.digits):
        _at_least(f"task.digits[{i}]", d, 1)
    for i, w in enumerate(cfg.task.weights):
        _at_least(f"task.weights[{i}]", w, 0.0)
    if cfg.task.name == "dataset" and not cfg.task.train_path:
        raise ConfigError("task.train_path is required when task.name=dataset")
    _at_least("task.train_size", cfg.task.train_size, 1)
    _at_least("task.eval_size", cfg.task.eval_size, 0)
    _one_of("rollout.backend", cfg.rollout.backend, ("vllm", "hf"))
    _one_of("rollout.dtype", cfg.rollout.dtype, ("auto", "bfloat16", "float32"))
    _at_least("rollout.num_engines", cfg.rollout.num_engines, 1)
    _at_least("rollout.prompts_per_step", cfg.rollout.prompts_per_step, 1)
    _at_least("rollout.samples_per_prompt", cfg.rollout.samples_per_prompt, 1)
    _at_least("rollout.max_new_tokens", cfg.rollout.max_new_tokens, 1)
    _at_least("rollout.temperature", cfg.rollout.temperature, 0.0)
    _at_least("rollout.max_staleness", cfg.rollout.max_staleness, 0)
    if not 0.0 < cfg.rollout.top_p <= 1.0:
        raise ConfigError(f"rollout.top_p={cfg.rollout.top_p!r} is not allowed; it must be in (0, 1]")
    _at_least("trainer.max_steps", cfg.trainer.max_steps, 0)
    _at_least("trainer.num_ranks", cfg.trainer.num_ranks, 1)
    _one_of("trainer.zero_stage", cfg.trainer.zero_stage, (0, 1, 2, 3))
    _at_least("trainer.lr", cfg.trainer.lr, 0.0)
    _at_least("trainer.micro_batch_size", cfg.trainer.micro_batch_size, 1)
    _at_least("trainer.sync_every", cfg.trainer.sync_every, 1)
    _one_of("trainer.dtype", cfg.trainer.dtype, ("auto", "bfloat16", "float32"))
    _one_of("trainer.dist_backend", cfg.trainer.dist_backend, ("auto", "gloo", "nccl"))
    _one_of("algo.name", cfg.algo.name, ("grpo", "dapo", "gspo", "ppo", "dpo", "rm"))
    if not 0.0 < cfg.algo.rm_held_out < 1.0:
        raise ConfigError(f"algo.rm_held_out={cfg.algo.rm_held_out!r} is not allowed; it must be in (0, 1)")
    _one_of("algo.dpo_loss", cfg.algo.dpo_loss, ("sigmoid", "ipo"))
    if cfg.algo.dpo_beta <= 0:
        raise ConfigError(f"algo.dpo_beta={cfg.algo.dpo_beta!r} is not allowed; it must be > 0")
    if not 0.0 <= cfg.algo.dpo_label_smoothing < 0.5:
        raise ConfigError(f"algo.dpo_label_smoothing={cfg.algo.dpo_label_smoothing!r} is not allowed; it must be in [0, 0.5)")
    if cfg.algo.dpo_loss == "ipo" and cfg.algo.dpo_label_smoothing:
        raise ConfigError("algo.dpo_label_smoothing applies to algo.dpo_loss=sigmoid only")
    _at_least("algo.pairs_per_step", cfg.algo.pairs_per_step, 1)
    _at_least("algo.pair_prompts", cfg.algo.pair_prompts, 1)
    if cfg.task.pairs_path is not None:
        if cfg.algo.name not in ("dpo", "rm"):
            raise ConfigError(f"task.pairs_path is read by recipe=dpo and recipe=rm only, not algo.name={cfg.algo.name}")
        if not Path(cfg.task.pairs_path).exists():
            raise ConfigError(
                f"task.pairs_path={cfg.task.pairs_path!r}: no such file or directory (a preference dataset: jsonl, "
                "parquet or an HF dataset directory; leave it unset to build pairs from the task)"
            )
    _one_of("algo.advantage", cfg.algo.advantage, ("group_norm", "dr_grpo", "rloo", "reinforce_pp", "gae"))
    if not 0.0 <= cfg.algo.gamma <= 1.0:
        raise ConfigError(f"algo.gamma={cfg.algo.gamma!r} is not allowed; it must be in [0, 1]")
    if not 0.0 <= cfg.algo.lam <= 1.0:
        raise ConfigError(f"algo.lam={cfg.algo.lam!r} is not allowed; it must be in [0, 1]")
    if cfg.algo.value_clip is not None and cfg.algo.value_clip <= 0:
        raise ConfigError(f"algo.value_clip={cfg.algo.value_clip!r} is not allowed; it must be > 0 (or null for off)")
    _at_least("algo.entropy_coef", cfg.algo.entropy_coef, 0.0)
    if cfg.algo.name == "ppo" and cfg.algo.advantage != "gae":
        raise ConfigError(f"algo.advantage={cfg.algo.advantage!r} is not allowed with algo.name=ppo; PPO uses gae")
    _one_of("algo.kl_mode", cfg.algo.kl_mode, ("loss", "reward"))
    if cfg.algo.kl_mode == "reward" and cfg.algo.advantage not in ("gae", "reinforce_pp"):
        raise ConfigError(
            f"algo.kl_mode=reward needs per-token advantages: algo.advantage must be gae or reinforce_pp, not {cfg.algo.advantage!r}"
        )
    if cfg.algo.kl_target is not None:
        if cfg.algo.kl_target <= 0:
            raise ConfigError(f"algo.kl_target={cfg.algo.kl_target!r} is not allowed; it must be > 0 (or null for a fixed coef)")
        if cfg.algo.kl_mode != "reward" or cfg.algo.kl_coef <= 0:
            raise ConfigError("algo.kl_target (adaptive KL) needs algo.kl_mode=reward and algo.kl_coef > 0 as its start value")
    if cfg.algo.kl_horizon <= 0:
        raise ConfigError(f"algo.kl_horizon={cfg.algo.kl_horizon!r} is not allowed; it must be > 0")
    _at_least("critic.lr", cfg.critic.lr, 0.0)
    _at_least("critic.num_ranks", cfg.critic.num_ranks, 1)
    if cfg.critic.num_ranks > 1 and cfg.trainer.zero_stage == 3:
        raise ConfigError(
            "critic.num_ranks > 1 is not allowed with trainer.zero_stage=3: critic rank 0 computes the rollout's "
            "values alone, which ZeRO-3's sharded parameters do not allow; use critic.num_ranks=1 or zero_stage 2"
        )
    _one_of("algo.policy_loss", cfg.algo.policy_loss, ("ppo_clip", "gspo"))
    if cfg.algo.dual_clip is not None and cfg.algo.dual_clip <= 1.0:
        raise ConfigError(f"algo.dual_clip={cfg.algo.dual_clip!r} is not allowed; it must be > 1 (or null for off)")
    if cfg.algo.loss_agg_constant is not None and cfg.algo.loss_agg_constant <= 0:
        raise ConfigError(f"algo.loss_agg_constant={cfg.algo.loss_agg_constant!r} is not allowed; it must be > 0")
    _at_least("algo.overlong_buffer", cfg.algo.overlong_buffer, 0)
    if cfg.algo.overlong_buffer > cfg.rollout.max_new_tokens:
        raise ConfigError(
            f"algo.overlong_buffer={cfg.algo.overlong_buffer} is not allowed; it must be <= rollout.max_new_tokens={cfg.rollout.max_new_tokens}"
        )
    _at_least("algo.overlong_penalty", cfg.algo.overlong_penalty, 0.0)
    _at_least("algo.max_sampling_rounds", cfg.algo.max_sampling_rounds, 0)
    _one_of("algo.kl_estimator", cfg.algo.kl_estimator, ("k1", "k2", "k3"))
    _one_of("algo.loss_agg", cfg.algo.loss_agg, LOSS_AGG_MODES)
    _at_least("algo.clip_eps_low", cfg.algo.clip_eps_low, 0.0)
    _at_least("algo.clip_eps_high", cfg.algo.clip_eps_high, 0.0)
    if cfg.algo.clip_eps_high < cfg.algo.clip_eps_low:
        raise ConfigError(
            f"algo.clip_eps_high={cfg.algo.clip_eps_high!r} is not allowed; it must be >= algo.clip_eps_low={cfg.algo.clip_eps_low!r}"
        )
    _at_least("algo.kl_coef", cfg.algo.kl_coef, 0.0)
    _at_least("algo.norm_eps", cfg.algo.norm_eps, 0.0)
    if cfg.algo.tis_cap is not None:
        _at_least("algo.tis_cap", cfg.algo.tis_cap, 1.0)
    if not cfg.reward.functions:
        raise ConfigError("reward.functions is empty; give at least one reward function")
    for i, fn in enumerate(cfg.reward.functions):
        _one_of(f"reward.functions[{i}].name", fn.name, (*rewards.REWARD_FUNCTIONS, "reward_model"))
        if fn.name == "reward_model":
            if not fn.path or not (Path(fn.path) / "config.json").is_file():
                raise ConfigError(
                    f"reward.functions[{i}].path={fn.path!r}: not a saved reward model directory (train one with recipe=rm)"
                )
        elif fn.path is not None:
            raise ConfigError(f"reward.functions[{i}].path is for name=reward_model only, not {fn.name!r}")
    if cfg.reward.timeout_s <= 0:
        raise ConfigError(f"reward.timeout_s={cfg.reward.timeout_s!r} is not allowed; it must be > 0")
    _at_least("reward.cache_size", cfg.reward.cache_size, 0)
    _one_of("logger.backend", cfg.logger.backend, ("wandb", "none"))
    _one_of("logger.mode", cfg.logger.mode, ("auto", "offline", "online"))
    _at_least("ray.actor_restarts", cfg.ray.actor_restarts, 0)
    _one_of("trainer.placement", cfg.trainer.placement, ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"))
    for key, amount in (
        *((f"rollout.resources.{k}", v) for k, v in cfg.rollout.resources.items()),
        *((f"trainer.resources.{k}", v) for k, v in cfg.trainer.resources.items()),
        *((f"critic.resources.{k}", v) for k, v in cfg.critic.resources.items()),
        ("rollout.num_gpus", cfg.rollout.num_gpus), ("trainer.num_gpus", cfg.trainer.num_gpus), ("critic.num_gpus", cfg.critic.num_gpus),
    ):
        _at_least(key, amount, 0.0)
    _at_least("trainer.group_restarts", cfg.trainer.group_restarts, 0)
    for key, cores in (("rollout.cpu_cores", cfg.rollout.cpu_cores), ("trainer.cpu_cores", cfg.trainer.cpu_cores)):
        if cores is not None and (not cores or min(cores) < 0):
            raise ConfigError(f"{key}={cores!r} is not allowed; list core numbers (e.g. [0]) or leave it null")
    if cfg.model.lora.enabled:
        _at_least("model.lora.rank", cfg.model.lora.rank, 1)
        if cfg.model.lora.alpha <= 0:
            raise ConfigError(f"model.lora.alpha={cfg.model.lora.alpha!r} is not allowed; it must be > 0")
        if not 0.0 <= cfg.model.lora.dropout < 1.0:
            raise ConfigError(f"model.lora.dropout: {cfg.model.lora.dropout} must be in [0, 1)")
        if not cfg.model.lora.target_modules:
            raise ConfigError("model.lora.target_modules: name at least one linear layer (e.g. q_proj)")
    _at_least("checkpoint.every", cfg.checkpoint.every, 0)
    _at_least("checkpoint.keep_last", cfg.checkpoint.keep_last, 1)
    _at_least("gate.every", cfg.gate.every, 0)
    _one_of("gate.on_fail", cfg.gate.on_fail, ("rollback", "stop", "reject"))
    _at_least("gate.accuracy_tolerance", cfg.gate.accuracy_tolerance, 0.0)
    if not 0.0 < cfg.gate.rollback_lr_factor <= 1.0:
        raise ConfigError(f"gate.rollback_lr_factor={cfg.gate.rollback_lr_factor!r} is not allowed; it must be in (0, 1]")
    if not 0.0 < cfg.gate.divergence_reward_drop <= 1.0:
        raise ConfigError(f"gate.divergence_reward_drop={cfg.gate.divergence_reward_drop!r} is not allowed; it must be in (0, 1]")
    _at_least("gate.divergence_reward_window", cfg.gate.divergence_reward_window, 1)
    if cfg.gate.eval_prompts is not None:
        _at_least("gate.eval_prompts", cfg.gate.eval_prompts, 1)
    for key, value in (("checkpoint.every", cfg.checkpoint.every), ("gate.every", cfg.gate.every), ("resume", cfg.resume)):
        if value and cfg.algo.name in ("dpo", "rm"):
            raise ConfigError(f"{key} is supported by the grpo, dapo, gspo and ppo recipes, not algo.name={cfg.algo.name}")
    if cfg.resume is not None and cfg.resume != "latest" and not str(cfg.resume).isdigit():
        raise ConfigError(f"resume={cfg.resume!r} is not allowed; use resume=latest or resume=<version id> (see `rlhf ckpt list`)")
    return cfg


def config_hash(cfg: Config) -> str:
    """sha256 of the config without the run's name: equal for runs of the same setup."""
    data = asdict(cfg)
    data["run"].pop("name", None)
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def to_config(cfg: DictConfig | Config) -> Config:
    """Turn a composed Hydra config into a validated `Config` object."""
    if isinstance(cfg, Config):
        return validate(cfg)
    merged = OmegaConf.merge(OmegaConf.structured(Config), cfg)
    return validate(OmegaConf.to_object(merged))
