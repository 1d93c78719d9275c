"""The typed config schema, and its validation.

Hydra composes `conf/`; the dataclasses here are registered as the base schema. A key
the schema lacks is refused by name, with the closest keys as a suggestion, whether it
was mistyped (`check_override_keys`, on the command line's overrides) or added with
`+`/`++` (`to_config`, on the composed config): only the `resources` dicts take keys of
the user's choosing. `validate` then checks values and ranges and raises `ConfigError`
naming the key and what is allowed. Every number is checked twice: each section's
`validate` gives each of its numeric keys a range, through the range helpers at the
bottom (which refuse NaN, +-inf and bools too), then `_check_numbers` walks the whole
schema (every number finite, every int an int of at most 32 bits, every duration key
`*_s` / `*timeout*` at most MAX_DURATION_S, every `seed` in [0, SEED_MAX]), so a key
added without a check still cannot take NaN, or a value that overflows a C call at run
time. Nothing here rewrites a user's setting.
"""
from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
import re
import types
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Union

if TYPE_CHECKING:
    from omegaconf import DictConfig


class ConfigError(ValueError):
    """A config value that is not allowed; the message names the key."""


# Upper bounds. Python's ints and floats have none, but what they reach does: a timeout
# above about 2.1e6 s overflows `multiprocessing`'s poll (a C int of milliseconds) and
# every reward call then "times out" at once; one above threading.TIMEOUT_MAX (9.2e9 s)
# makes every wait raise; numpy refuses seeds of 2**32 and more, torch of 2**64; `10**digits`
# of an operand of thousands of digits passes Python's int-to-str limit. So every
# duration, seed and count has a finite range; a count with no other limit of its own
# stops at MAX_COUNT, far above any setting that runs on a real machine.
MAX_DURATION_S = 1_000_000.0  # any duration key (*_s, *timeout*): 11.6 days
MAX_REWARD_TIMEOUT_S = 86_400.0  # reward.timeout_s: one day per reward call (waits multiply it by rounds of workers)
SEED_MAX = 2**31 - 1  # every seed key: engines and samples add their index to it, and numpy takes < 2**32
INT_MAX = 2**31 - 1  # every int key (a C int wherever one ends up)
MAX_COUNT = 1_000_000  # counts of prompts, samples, steps per step, restarts, ...
MAX_DIGITS = 18  # task.digits: a sum of two 18-digit operands (< 2e18) still fits an int64
MAX_COUNT_LENGTH = 10_000  # task.count_lengths: a correct reply of 10k numbers is ~20k+ tokens
MAX_MODEL_LEN = 2**20  # model.max_model_len (so also every max_new_tokens, which must be below it)
MAX_RANKS = 10_000  # trainer / critic ranks, rollout engines, tensor-parallel GPUs
MAX_THREADS = 4_096  # trainer.num_threads
MAX_CORE = 8_191  # a CPU core number (Linux's NR_CPUS is at most 8192)
NAME_PATTERN = re.compile(r"[A-Za-z0-9_.-]+")  # a plain file name: run.name, eval set and mixture names (not . or ..)


@dataclass
class RunConfig:
    name: str = "run"  # run directory name under `root`
    root: str = "runs"  # where run directories live
    seed: int = 0  # seeds data order, sampling and model init

    def validate(self) -> None:
        _plain_name("run.name", self.name, " (it names the run directory under run.root)")
        if not isinstance(self.root, str) or not self.root.strip():
            raise ConfigError(f"run.root={self.root!r} is not allowed; give the directory run directories go in (default: runs)")
        _seed("run.seed", self.seed)


@dataclass
class RayConfig:
    address: Optional[str] = None  # None: start a local cluster on 127.0.0.1; "auto" or host:port: join one
    num_cpus: Optional[int] = None  # logical CPUs of a local cluster (None: Ray's count)
    include_dashboard: bool = True  # serve the dashboard (local cluster only)
    dashboard_host: str = "127.0.0.1"  # bind address of the dashboard
    metrics_export_port: Optional[int] = None  # Prometheus port of the local node's role metrics (None: Ray picks)
    actor_restarts: int = 3  # times Ray restarts a crashed rollout engine, reward or reference actor
    # the longest any call on a role is waited for; past it the run fails naming the role and the call
    call_timeout_s: float = 3600.0

    def validate(self) -> None:
        _between("ray.actor_restarts", self.actor_restarts, 0, MAX_COUNT)
        _duration("ray.call_timeout_s", self.call_timeout_s)
        if self.num_cpus is not None:
            _between("ray.num_cpus", self.num_cpus, 0, MAX_COUNT, " (or null for Ray's count)")
        if self.metrics_export_port is not None:
            _in_range("ray.metrics_export_port", self.metrics_export_port, 1, 65535, hint=" (or null for Ray to pick)")


@dataclass
class TinyModelConfig:
    layers: int = 2
    hidden: int = 128
    heads: int = 4
    kv_heads: int = 2
    intermediate: int = 256
    vocab_size: int = 400  # target BPE vocabulary of the locally trained tokenizer
    seed: int = 0

    def validate(self) -> None:
        # a model for tests and drills: bounds far above that, below what takes a machine's memory
        for name, high in (("layers", 256), ("hidden", 16_384), ("heads", 16_384), ("kv_heads", 16_384),
                           ("intermediate", 65_536), ("vocab_size", 262_144)):
            _between(f"model.tiny.{name}", getattr(self, name), 1, high)
        _seed("model.tiny.seed", self.seed)
        if self.hidden % self.heads:
            raise ConfigError(f"model.tiny.hidden={self.hidden} is not allowed; it must be a multiple of model.tiny.heads={self.heads}")
        if self.heads % self.kv_heads:
            raise ConfigError(f"model.tiny.heads={self.heads} is not allowed; it must be a multiple of model.tiny.kv_heads={self.kv_heads}")


@dataclass
class LoraConfig:
    enabled: bool = False  # train LoRA adapters (peft) instead of every weight; engines get merged weights
    rank: int = 16  # adapter rank r
    alpha: float = 32.0  # scaling numerator: updates are B·A·alpha/r
    dropout: float = 0.0
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )  # names of the linear layers that get adapters

    def validate(self) -> None:
        if not self.enabled:
            return
        _between("model.lora.rank", self.rank, 1, 16_384)
        _above("model.lora.alpha", self.alpha, 0)
        _in_range("model.lora.dropout", self.dropout, 0, 1, open_high=True)
        if not self.target_modules:
            raise ConfigError("model.lora.target_modules: name at least one linear layer (e.g. q_proj)")


@dataclass
class ModelConfig:
    name: str = "smollm2_135m"  # smollm2_135m | tiny | local (set by model.path)
    path: Optional[str] = None  # a local HF model directory; overrides `name`
    max_model_len: int = 512  # context length the rollout engine serves
    tiny: TinyModelConfig = field(default_factory=TinyModelConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)

    def validate(self) -> None:
        _one_of("model.name", self.name, ("smollm2_135m", "tiny", "local"))
        _between("model.max_model_len", self.max_model_len, 1, MAX_MODEL_LEN)
        if self.path is not None:  # checked here too, so a refused run leaves no run directory
            check_model_path(self.path)
        self.tiny.validate()
        self.lora.validate()


@dataclass
class MixtureDatasetConfig:
    """One dataset of a task mixture (`task.mixture`): where its prompts come from, how
    often they are drawn, and how its replies are scored."""

    name: str = ""  # its prompt ids are name/<id>; its held-out split is the eval set `name`
    path: str = ""  # a source as task.train_path takes it: a file, a folder, a glob or a cached hub name
    probability: float = 1.0  # its share of the prompts drawn (relative: normalised over the mixture)
    train_split: str = "train"
    eval_split: Optional[str] = None  # its held-out split (None: "test", else "validation", else none)
    dataset_config: Optional[str] = None  # config of a hub dataset (openai/gsm8k: main)
    prompt_field: Optional[str] = None  # None: task.prompt_field
    answer_field: Optional[str] = None  # None: task.answer_field
    weights: Optional[list[float]] = None  # sampling weights of its difficulty levels (None: task.weights)
    reward_functions: Optional[list[RewardFunctionConfig]] = None  # what scores its replies (None: reward.functions)


@dataclass
class TaskConfig:
    name: str = "arithmetic"  # arithmetic | count (long-tail lengths) | dataset (user files in train_path / eval_path)
    digits: list[int] = field(default_factory=lambda: [1, 2])  # arithmetic: operand digits of each difficulty level
    # count: "list the integers from a to b"; level i asks for lists of up to count_lengths[i]
    # numbers (longer than level i-1's), so correct replies range from a few tokens to 100+
    count_lengths: list[int] = field(default_factory=lambda: [4, 16, 40])
    # sampling weight of each difficulty level: arithmetic one per task.digits entry, count one
    # per count_lengths entry, dataset one per level of the rows' `difficulty` field (an
    # integer, 0 without one; a row at a level >= len(weights) is a bad row)
    weights: list[float] = field(default_factory=lambda: [0.5, 0.5])
    train_size: int = 2000  # training prompts per level
    eval_size: int = 100  # held-out prompts per level
    template: str = "What is {a} + {b}? Reply with only the number."
    # dataset: train_path / eval_path each name a source, resolved in this order: a file
    # (.jsonl, .json, .parquet, .csv, .tsv, .arrow); a folder (an HF save_to_disk directory,
    # or data files whose names give their split: train-*.parquet, data/test/...); a glob
    # (data/train-*.parquet); a hub name (openai/gsm8k) read only from the local HF caches
    # (HF_DATASETS_CACHE, then HF_HUB_CACHE; runs never download)
    train_path: Optional[str] = None
    eval_path: Optional[str] = None  # None: task.eval_split of train_path's source, if it has that split
    train_split: str = "train"  # split of train_path to train on (a file, a glob or a saved Dataset is split "train")
    # split of eval_path (None: its only split, else "test", else "validation"); with no
    # eval_path, of train_path (None: "test", else "validation", else no held-out prompts)
    eval_split: Optional[str] = None
    dataset_config: Optional[str] = None  # config of a hub dataset or README-configured folder (openai/gsm8k: main)
    # a string, or a list of {role, content} turns (system first if any, the last the
    # user's) rendered with the model's chat template; rewards get the last user turn's text
    prompt_field: str = "prompt"
    answer_field: str = "answer"
    # system turn for every prompt without one, through the chat template (a model without
    # a chat template is then an error); None: none
    system_prompt: Optional[str] = None
    pairs_path: Optional[str] = None  # DPO/RM preference pairs (jsonl, parquet, HF dir); None: built from the task
    chosen_field: str = "chosen"
    rejected_field: str = "rejected"
    on_bad_row: str = "error"  # error | skip (skipped rows are counted)
    # task.name=dataset: several datasets drawn with their probabilities (OpenRLHF's
    # prompt_probs), each with its own difficulty weights and reward functions; instead of
    # train_path / eval_path (checked in `_check_mixture`)
    mixture: list[MixtureDatasetConfig] = field(default_factory=list)

    def validate(self) -> None:
        _one_of("task.name", self.name, ("arithmetic", "count", "dataset"))
        _one_of("task.on_bad_row", self.on_bad_row, ("error", "skip"))
        if self.name != "dataset":  # a dataset's levels are its rows' difficulty field, checked as it loads
            levels_key, levels = ("task.count_lengths", self.count_lengths) if self.name == "count" else ("task.digits", self.digits)
            if len(levels) != len(self.weights):
                raise ConfigError(
                    f"task.weights has {len(self.weights)} entries but {levels_key} has {len(levels)}; give one weight per level"
                )
        for i, (low, high) in enumerate(zip([0, *self.count_lengths], self.count_lengths)):
            _finite(f"task.count_lengths[{i}]", high, "")
            if high <= low:
                raise ConfigError(f"task.count_lengths[{i}]={high} is not allowed; lengths must increase from 1 up")
            _between(f"task.count_lengths[{i}]", high, 1, MAX_COUNT_LENGTH, " (numbers in a reply)")
        for i, d in enumerate(self.digits):
            _between(f"task.digits[{i}]", d, 1, MAX_DIGITS, " (digits of an operand)")
        for i, w in enumerate(self.weights):
            _at_least(f"task.weights[{i}]", w, 0.0)
        if not any(w > 0 for w in self.weights):
            raise ConfigError(f"task.weights={self.weights!r} is not allowed; give at least one level a weight > 0")
        if self.name == "dataset" and not self.train_path and not self.mixture:
            raise ConfigError("task.train_path (or task.mixture) is required when task.name=dataset")
        for key, value in (("task.train_split", self.train_split), ("task.eval_split", self.eval_split),
                           ("task.dataset_config", self.dataset_config), ("task.system_prompt", self.system_prompt)):
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise ConfigError(f"{key}={value!r} is not allowed; give a non-empty string (or null where allowed)")
        if self.train_split is None:
            raise ConfigError("task.train_split=None is not allowed; name the split to train on (default: train)")
        if not self.eval_path and self.eval_split == self.train_split:
            raise ConfigError(
                f"task.eval_split={self.eval_split!r} is task.train_split too: held-out prompts must not be trained on; "
                "name another split or set task.eval_path"
            )
        _between("task.train_size", self.train_size, 1, MAX_COUNT)
        _between("task.eval_size", self.eval_size, 0, MAX_COUNT)
        self._check_mixture()

    def _check_mixture(self) -> None:
        """A mixture replaces train_path / eval_path; its datasets are named apart, drawn
        with finite positive probabilities, weighted and scored by valid keys."""
        from rlhf_platform import rewards  # late import: rewards pull in math-verify

        if not self.mixture:
            return
        if self.name != "dataset" or self.train_path or self.eval_path:
            raise ConfigError(
                "task.mixture replaces task.train_path and task.eval_path (each dataset has its path and eval_split): "
                f"set task.name=dataset and leave them null (got task.name={self.name}, train_path={self.train_path!r}, "
                f"eval_path={self.eval_path!r})"
            )
        names = ["held_out"]
        for i, part in enumerate(self.mixture):
            key = f"task.mixture[{i}]"
            _check_named_source(key, part.name, part.path, names)
            _above(f"{key}.probability", part.probability, 0)
            if part.weights is not None:
                for j, w in enumerate(part.weights):
                    _at_least(f"{key}.weights[{j}]", w, 0.0)
                if not any(w > 0 for w in part.weights):
                    raise ConfigError(f"{key}.weights={part.weights!r} is not allowed; give at least one level a weight > 0")
            if part.reward_functions is not None:
                if not part.reward_functions:
                    raise ConfigError(f"{key}.reward_functions is empty; give at least one, or null for reward.functions")
                for j, fn in enumerate(part.reward_functions):
                    _check_reward_function(f"{key}.reward_functions[{j}]", fn, (*rewards.REWARD_FUNCTIONS, "reward_model"))


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
    # GPUs one vLLM engine shards its model over (vLLM's tensor parallelism); each engine
    # actor then reserves that many (rollout.num_gpus >= it). CUDA graphs are on for GPUs.
    tensor_parallel_size: int = 1
    # weight syncs rollout may run ahead of training (0 = synchronous); samples are at most
    # (max_staleness + 1) * trainer.sync_every - 1 optimizer steps old
    max_staleness: int = 1
    # streaming: engines generate continuously and hand over each finished group; a step
    # trains on the next prompts_per_step groups (false: one rollout per step, launched whole)
    streaming: bool = False
    # partial rollout (streaming, vLLM): a weight update pauses sequences in flight at a token
    # boundary, loads, and continues them; each token records the version that sampled it
    partial: bool = False
    stale_tokens: str = "drop"  # drop | mask: a sample older than the bound is dropped, or its old tokens masked
    # streaming: groups sampled but not yet trained (in engines, being scored, buffered) at
    # most; None: (max_staleness + 1) * sync_every * prompts_per_step, what the bound allows
    buffer_groups: Optional[int] = None
    num_cpus: float = 0.0  # Ray CPUs each engine actor reserves
    num_gpus: float = 0.0  # GPUs each engine actor reserves
    cpu_cores: Optional[list[int]] = None  # pin engines to these cores of their node (None: every core)
    resources: dict[str, float] = field(default_factory=dict)  # custom Ray resources of each engine, e.g. {rollout: 1}

    def validate(self) -> None:
        _one_of("rollout.backend", self.backend, ("vllm", "hf"))
        _one_of("rollout.dtype", self.dtype, ("auto", "bfloat16", "float32"))
        _between("rollout.num_engines", self.num_engines, 1, MAX_RANKS)
        _between("rollout.prompts_per_step", self.prompts_per_step, 1, MAX_COUNT)
        _between("rollout.samples_per_prompt", self.samples_per_prompt, 1, MAX_COUNT)
        _at_least("rollout.max_new_tokens", self.max_new_tokens, 1)
        _at_least("rollout.temperature", self.temperature, 0.0)
        _in_range("rollout.top_p", self.top_p, 0, 1, open_low=True)
        _above("rollout.kv_cache_gib", self.kv_cache_gib, 0)
        _in_range("rollout.gpu_memory_utilization", self.gpu_memory_utilization, 0, 1, open_low=True)
        _between("rollout.max_staleness", self.max_staleness, 0, MAX_COUNT)
        _between("rollout.tensor_parallel_size", self.tensor_parallel_size, 1, MAX_RANKS)
        _one_of("rollout.stale_tokens", self.stale_tokens, ("drop", "mask"))
        if self.buffer_groups is not None:
            _at_least("rollout.buffer_groups", self.buffer_groups, self.prompts_per_step)
        if self.partial and not (self.streaming and self.backend == "vllm"):
            raise ConfigError(
                "rollout.partial=true continues sequences across weight updates inside a streaming vLLM engine: "
                f"it needs rollout.streaming=true and rollout.backend=vllm (got streaming={self.streaming}, backend={self.backend})"
            )
        if self.tensor_parallel_size > 1 and (self.backend != "vllm" or self.num_gpus < self.tensor_parallel_size):
            raise ConfigError(
                f"rollout.tensor_parallel_size={self.tensor_parallel_size} shards a vLLM engine over GPUs: it needs "
                f"rollout.backend=vllm and rollout.num_gpus >= {self.tensor_parallel_size} (each engine reserves its GPUs); "
                f"got backend={self.backend}, num_gpus={self.num_gpus}"
            )
        _check_resources("rollout", self.resources, self.num_gpus, self.num_cpus)
        _check_cpu_cores("rollout.cpu_cores", self.cpu_cores)


@dataclass
class TrainerConfig:
    max_steps: int = 12
    num_ranks: int = 1  # data-parallel DeepSpeed ranks, one Ray actor each
    zero_stage: int = 2  # 0 (no partitioning: best for one rank) | 1 | 2 | 3
    lr: float = 1.0e-5
    weight_decay: float = 0.0  # AdamW's decoupled weight decay
    grad_clip: float = 1.0  # gradients clipped to this global norm (0: off)
    micro_batch_size: int = 16  # sequences per forward/backward
    dtype: str = "auto"  # training precision: auto (bf16 on GPU, fp32 on CPU) | bfloat16 | float32
    dist_backend: str = "auto"  # auto (nccl on GPU, gloo on CPU) | gloo | nccl
    sync_every: int = 1  # publish weights to the engines every k optimizer steps (and after the last)
    group_restarts: int = 2  # times a trainer group that lost a rank is restarted from the last checkpoint
    num_threads: Optional[int] = None  # torch threads per rank (None: every core the rank may run on)
    cpu_cores: Optional[list[int]] = None  # pin ranks to these cores of their node (None: every core)
    num_cpus: float = 0.0  # Ray CPUs each rank reserves
    num_gpus: float = 0.0  # GPUs each rank reserves (1 on a GPU cluster)
    resources: dict[str, float] = field(default_factory=dict)  # custom Ray resources of each rank, e.g. {trainer: 1}
    placement: str = "PACK"  # placement group of the ranks: PACK | SPREAD | STRICT_PACK | STRICT_SPREAD

    def validate(self) -> None:
        _at_least("trainer.max_steps", self.max_steps, 0)
        _between("trainer.num_ranks", self.num_ranks, 1, MAX_RANKS)
        _one_of("trainer.zero_stage", self.zero_stage, (0, 1, 2, 3))
        _at_least("trainer.lr", self.lr, 0.0)
        _at_least("trainer.weight_decay", self.weight_decay, 0.0)
        _at_least("trainer.grad_clip", self.grad_clip, 0.0, " (0: off)")
        _between("trainer.micro_batch_size", self.micro_batch_size, 1, MAX_COUNT)
        _between("trainer.sync_every", self.sync_every, 1, MAX_COUNT)
        _one_of("trainer.dtype", self.dtype, ("auto", "bfloat16", "float32"))
        _one_of("trainer.dist_backend", self.dist_backend, ("auto", "gloo", "nccl"))
        _one_of("trainer.placement", self.placement, ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"))
        _check_resources("trainer", self.resources, self.num_gpus, self.num_cpus)
        _between("trainer.group_restarts", self.group_restarts, 0, MAX_COUNT)
        if self.num_threads is not None:
            _between("trainer.num_threads", self.num_threads, 1, MAX_THREADS, " (or null for every core)")
        _check_cpu_cores("trainer.cpu_cores", self.cpu_cores)


# group_norm: (r - group mean) / group std (GRPO) | dr_grpo: r - group mean |
# rloo: r - mean of the other samples | reinforce_pp: per-token discounted returns
# whitened over the batch | reinforce_pp_baseline: the same after subtracting each
# group's mean reward | gae: per-token GAE from the critic's values (PPO; starts the Critic)
ESTIMATORS = ("group_norm", "dr_grpo", "rloo", "reinforce_pp", "reinforce_pp_baseline", "gae")
TOKEN_ESTIMATORS = ("reinforce_pp", "reinforce_pp_baseline", "gae")  # per-token advantages


@dataclass
class AdvantageConfig:
    """How each sample's (or token's) advantage is computed from rewards."""

    estimator: str = "group_norm"  # one of ESTIMATORS above
    norm_eps: float = 1.0e-6  # added to the std of group_norm, reinforce_pp and GAE whitening
    gamma: float = 1.0  # GAE / REINFORCE++ discount per token
    lam: float = 0.95  # GAE lambda
    whiten: bool = True  # GAE: normalise advantages over the batch's tokens
    reward_clip: Optional[float] = None  # task rewards clipped to [-c, c] before any estimator (None: off)
    # none | batch: rewards whitened over the batch | running: scaled by a running std
    # of every reward seen (saved in checkpoints), before any estimator
    reward_norm: str = "none"

    def validate(self) -> None:
        _one_of("algo.advantage.estimator", self.estimator, ESTIMATORS)
        _one_of("algo.advantage.reward_norm", self.reward_norm, ("none", "batch", "running"))
        if self.reward_clip is not None:
            _above("algo.advantage.reward_clip", self.reward_clip, 0, " (or null for off)")
        _in_range("algo.advantage.gamma", self.gamma, 0.0, 1.0)
        _in_range("algo.advantage.lam", self.lam, 0.0, 1.0)
        _at_least("algo.advantage.norm_eps", self.norm_eps, 0.0)


@dataclass
class PolicyLossConfig:
    """The policy's surrogate loss: its ratio, clipping, aggregation, IS cap and entropy bonus."""

    loss: str = "ppo_clip"  # ppo_clip: per-token ratio | gspo: sequence ratio (length-normalised)
    clip_eps_low: float = 0.2  # ratio clipped to [1 - low, 1 + high]
    clip_eps_high: float = 0.2  # DAPO clip-higher: high > low
    dual_clip: Optional[float] = None  # dual-clip PPO constant c > 1 for negative advantages (None: off)
    log_ratio_clamp: float = 20.0  # log(pi/pi_old) clamped to +-this before exp (a guard against inf/nan)
    # token_mean: all tokens of the batch equal (DAPO) | seq_mean_token_mean: each sequence
    # equal (GRPO paper) | seq_sum_const: token sums / loss_agg_constant, mean over sequences (Dr. GRPO)
    loss_agg: str = "token_mean"
    loss_agg_constant: Optional[float] = None  # seq_sum_const divisor (None: rollout.max_new_tokens)
    entropy_coef: float = 0.0  # entropy bonus weight (0: off, skips the entropy pass)

    def validate(self) -> None:
        from rlhf_platform.algos.losses import LOSS_AGG_MODES  # late import: losses pull in torch

        _one_of("algo.policy.loss", self.loss, ("ppo_clip", "gspo"))
        _at_least("algo.policy.clip_eps_low", self.clip_eps_low, 0.0)
        _at_least("algo.policy.clip_eps_high", self.clip_eps_high, 0.0)
        if self.clip_eps_high < self.clip_eps_low:
            raise ConfigError(
                f"algo.policy.clip_eps_high={self.clip_eps_high!r} is not allowed; it must be >= "
                f"algo.policy.clip_eps_low={self.clip_eps_low!r}"
            )
        if self.dual_clip is not None:
            _above("algo.policy.dual_clip", self.dual_clip, 1, " (or null for off)")
        _above("algo.policy.log_ratio_clamp", self.log_ratio_clamp, 0)
        _one_of("algo.policy.loss_agg", self.loss_agg, LOSS_AGG_MODES)
        if self.loss_agg_constant is not None:
            _above("algo.policy.loss_agg_constant", self.loss_agg_constant, 0, " (or null for rollout.max_new_tokens)")
        _at_least("algo.policy.entropy_coef", self.entropy_coef, 0.0)


@dataclass
class ISCorrectionConfig:
    """Importance-sampling correction for samples the engine drew from other weights
    (stale) or with other numerics (vLLM vs the trainer): the ratio pi_old / pi_behaviour
    of the trainer's log-probs at the step's start to the engine's, per token or per
    sequence, truncated or masked. Weights every loss term (GSPO's too)."""

    level: str = "token"  # token | sequence: exp(sum over the reply) | geometric: exp(mean) | none
    mode: str = "truncate"  # truncate: weight min(ratio, cap) | mask: ratio inside [floor, cap], else 0 (IcePop)
    cap: float = 2.0  # upper bound of the ratio (truncate) or of the band (mask)
    floor: Optional[float] = None  # lower bound of the band (mask; None: 1 / cap)

    def validate(self) -> None:
        _one_of("algo.is_correction.level", self.level, ("token", "sequence", "geometric", "none"))
        _one_of("algo.is_correction.mode", self.mode, ("truncate", "mask"))
        _at_least("algo.is_correction.cap", self.cap, 1.0)
        if self.floor is not None:
            _in_range("algo.is_correction.floor", self.floor, 0, 1, hint=" (or null for 1 / cap)")
        if self.floor is not None and self.mode != "mask":
            raise ConfigError("algo.is_correction.floor applies to algo.is_correction.mode=mask only")


@dataclass
class KLConfig:
    """The KL to the reference policy: its weight, estimator, where it applies, and the adaptive controller."""

    coef: float = 0.0  # weight (initial value if adaptive); 0 skips the Reference service
    estimator: str = "k3"  # k1 | k2 | k3
    mode: str = "loss"  # loss: a KL term in the policy loss (GRPO) | reward: per-token reward penalty (PPO)
    target: Optional[float] = None  # adaptive controller target per sequence (mode=reward; None: fixed coef)
    horizon: float = 10000.0  # adaptive controller horizon, in samples

    def validate(self) -> None:
        _at_least("algo.kl.coef", self.coef, 0.0)
        _one_of("algo.kl.estimator", self.estimator, ("k1", "k2", "k3"))
        _one_of("algo.kl.mode", self.mode, ("loss", "reward"))
        if self.target is not None:
            _above("algo.kl.target", self.target, 0, " (or null for a fixed coef)")
            if self.mode != "reward" or self.coef <= 0:
                raise ConfigError("algo.kl.target (adaptive KL) needs algo.kl.mode=reward and algo.kl.coef > 0 as its start value")
        _above("algo.kl.horizon", self.horizon, 0)


@dataclass
class DAPOConfig:
    """DAPO's dynamic sampling and soft overlong penalty."""

    dynamic_sampling: bool = False  # drop groups whose rewards are all equal, sample more prompts
    max_sampling_rounds: int = 3  # extra rollouts per step at most when dynamic sampling tops a batch up
    overlong_buffer: int = 0  # soft overlong penalty over the last N tokens before max_new_tokens (0: off)
    overlong_penalty: float = 1.0  # weight of that penalty (reward falls by up to this much)

    def validate(self) -> None:
        _between("algo.dapo.max_sampling_rounds", self.max_sampling_rounds, 0, MAX_COUNT)
        _at_least("algo.dapo.overlong_buffer", self.overlong_buffer, 0)
        _at_least("algo.dapo.overlong_penalty", self.overlong_penalty, 0.0)


@dataclass
class PreferenceConfig:
    """Preference training: DPO / IPO (recipe=dpo, against the Reference's logprobs) and
    Bradley-Terry reward models (recipe=rm)."""

    beta: float = 0.1  # DPO: strength of the implicit KL to the reference
    loss: str = "sigmoid"  # sigmoid (DPO) | ipo
    label_smoothing: float = 0.0  # conservative DPO: assumed fraction of flipped labels (sigmoid only)
    pairs_per_step: int = 16  # preference pairs per optimizer step
    pair_prompts: int = 256  # built-in pairs: task prompts sampled (rollout.samples_per_prompt each) to find pairs
    rm_held_out: float = 0.1  # recipe=rm: share of pairs held out for pairwise accuracy

    def validate(self) -> None:
        _one_of("algo.preference.loss", self.loss, ("sigmoid", "ipo"))
        _above("algo.preference.beta", self.beta, 0)
        _in_range("algo.preference.label_smoothing", self.label_smoothing, 0, 0.5, open_high=True)
        if self.loss == "ipo" and self.label_smoothing:
            raise ConfigError("algo.preference.label_smoothing applies to algo.preference.loss=sigmoid only")
        _between("algo.preference.pairs_per_step", self.pairs_per_step, 1, MAX_COUNT)
        _between("algo.preference.pair_prompts", self.pair_prompts, 1, MAX_COUNT)
        _in_range("algo.preference.rm_held_out", self.rm_held_out, 0, 1, open_low=True, open_high=True)


@dataclass
class AlgoConfig:
    """The algorithm: its name (the recipe) and one section per concern."""

    name: str = "grpo"  # grpo | dapo | gspo | ppo (one online-RL loop) | dpo | rm
    # Each step's batch is cut into `mini_batches` (whole prompt groups), one optimizer
    # step each, and the pass is repeated `ppo_epochs` times; the ratio's pi_old is the
    # policy at the step's start (recompute) or the engine's behaviour log-probs.
    ppo_epochs: int = 1
    mini_batches: int = 1
    old_logprobs: str = "recompute"  # recompute: trainer forward at the step's start (decoupled PPO) | behaviour
    target_kl: Optional[float] = None  # stop a step's remaining epochs once an epoch's approx KL exceeds it
    advantage: AdvantageConfig = field(default_factory=AdvantageConfig)
    policy: PolicyLossConfig = field(default_factory=PolicyLossConfig)
    is_correction: ISCorrectionConfig = field(default_factory=ISCorrectionConfig)
    kl: KLConfig = field(default_factory=KLConfig)
    dapo: DAPOConfig = field(default_factory=DAPOConfig)
    preference: PreferenceConfig = field(default_factory=PreferenceConfig)

    def validate(self) -> None:
        _one_of("algo.name", self.name, ("grpo", "dapo", "gspo", "ppo", "dpo", "rm"))
        _between("algo.ppo_epochs", self.ppo_epochs, 1, MAX_COUNT)
        _at_least("algo.mini_batches", self.mini_batches, 1)
        _one_of("algo.old_logprobs", self.old_logprobs, ("recompute", "behaviour"))
        if self.target_kl is not None:
            _above("algo.target_kl", self.target_kl, 0, " (or null for off)")
        for section in (self.advantage, self.policy, self.is_correction, self.kl, self.dapo, self.preference):
            section.validate()
        self._check_inert_knobs()
        if self.name == "ppo" and self.advantage.estimator != "gae":
            raise ConfigError(
                f"algo.advantage.estimator={self.advantage.estimator!r} is not allowed with algo.name=ppo; PPO uses gae"
            )
        if self.kl.mode == "reward" and self.advantage.estimator not in TOKEN_ESTIMATORS:
            raise ConfigError(
                f"algo.kl.mode=reward needs per-token advantages: algo.advantage.estimator must be one of {', '.join(TOKEN_ESTIMATORS)}, "
                f"not {self.advantage.estimator!r}"
            )

    def _check_inert_knobs(self) -> None:
        """Refuse settings that would be accepted and silently do nothing."""
        if self.target_kl is not None and self.ppo_epochs == 1:
            raise ConfigError("algo.target_kl stops a step's later epochs early: it needs algo.ppo_epochs > 1")
        if self.old_logprobs == "behaviour" and self.is_correction.level != "none":
            raise ConfigError(
                "algo.old_logprobs=behaviour makes the engine's log-probs pi_old, which leaves algo.is_correction "
                "nothing to correct: set algo.is_correction.level=none (or algo.old_logprobs=recompute)"
            )
        if self.policy.dual_clip is not None and self.policy.loss == "gspo":
            raise ConfigError("algo.policy.dual_clip applies to algo.policy.loss=ppo_clip (GSPO clips the sequence ratio)")
        if self.advantage.reward_norm != "none" and self.advantage.estimator == "group_norm":
            raise ConfigError(
                f"algo.advantage.reward_norm={self.advantage.reward_norm} does nothing with algo.advantage.estimator=group_norm "
                "(each group is divided by its own std); use it with dr_grpo, rloo, reinforce_pp(_baseline) or gae"
            )


@dataclass
class ReferenceConfig:
    """The Reference service (started for a KL term and for DPO): where it runs."""

    dtype: str = "auto"  # auto (bf16 on GPU, fp32 on CPU) | bfloat16 | float32
    num_cpus: float = 0.0
    num_gpus: float = 0.0  # e.g. 1 (its own GPU), or 0.5 with colocate_with_trainer
    resources: dict[str, float] = field(default_factory=dict)
    colocate_with_trainer: bool = False  # share trainer rank 0's placement group bundle (node and GPU)

    def validate(self) -> None:
        _one_of("reference.dtype", self.dtype, ("auto", "bfloat16", "float32"))
        _check_resources("reference", self.resources, self.num_gpus, self.num_cpus)


WEIGHT_TRANSPORTS = ("auto", "object_store", "shared_memory", "collective")


@dataclass
class WeightSyncConfig:
    """How published weights travel from trainer rank 0 to the engines (the bus, its
    versions and digests are the same for every transport)."""

    # auto: the executor's own (Ray object store; a private copy in process) |
    # object_store: Ray's, across nodes | shared_memory: tmpfs files the engines map
    # (CUDA IPC on GPUs), engines on the trainer's node | collective: broadcast over a
    # torch.distributed group of trainer rank 0 and the engines (NCCL on GPU, gloo on CPU)
    transport: str = "auto"
    backend: str = "auto"  # collective: auto (nccl on GPU, gloo on CPU and in one process) | gloo | nccl
    bucket_mb: float = 256.0  # collective: bytes per broadcast
    timeout_s: float = 600.0  # collective: forming the group, and each publish
    shm_root: str = "/dev/shm"  # shared_memory: the tmpfs its slot files live in

    def validate(self) -> None:
        _one_of("weight_sync.transport", self.transport, WEIGHT_TRANSPORTS)
        _one_of("weight_sync.backend", self.backend, ("auto", "gloo", "nccl"))
        _above("weight_sync.bucket_mb", self.bucket_mb, 0)
        _duration("weight_sync.timeout_s", self.timeout_s)
        if self.transport == "shared_memory" and not Path(self.shm_root).is_dir():
            raise ConfigError(f"weight_sync.shm_root={self.shm_root!r}: no such directory (a tmpfs such as /dev/shm)")


@dataclass
class CriticConfig:
    """The PPO critic (started when algo.advantage.estimator=gae). Engine settings (ZeRO stage,
    micro-batch, precision) are the trainer's; model, learning rate and ranks are its own."""

    model_path: Optional[str] = None  # HF directory for the value model's backbone (None: the policy's)
    lr: float = 1.0e-5
    num_ranks: int = 1  # data-parallel DeepSpeed ranks of the critic
    num_cpus: float = 0.0  # Ray CPUs each critic rank reserves
    num_gpus: float = 0.0
    resources: dict[str, float] = field(default_factory=dict)
    # step the critic while the policy steps (their own devices), or after it (sharing cores)
    train_concurrently: bool = True
    value_clip: Optional[float] = 0.2  # value clipped around the rollout-time values (None: off)
    # critic rank i shares trainer rank i's placement group bundle (its node and GPU;
    # each then reserves a share, e.g. num_gpus 0.5 each)
    colocate_with_trainer: bool = False

    def validate(self) -> None:
        _at_least("critic.lr", self.lr, 0.0)
        if self.value_clip is not None:
            _above("critic.value_clip", self.value_clip, 0, " (or null for off)")
        _between("critic.num_ranks", self.num_ranks, 1, MAX_RANKS)
        _check_resources("critic", self.resources, self.num_gpus, self.num_cpus)


@dataclass
class RewardFunctionConfig:
    name: str = "math_answer"  # a function in rlhf_platform.rewards, or reward_model (a trained one at `path`)
    weight: float = 1.0  # any finite number (negative: a penalty)
    path: Optional[str] = None  # reward_model only: the HF directory recipe=rm saved


@dataclass
class RewardConfig:
    functions: list[RewardFunctionConfig] = field(default_factory=lambda: [RewardFunctionConfig()])
    timeout_s: float = 60.0  # a reward function call that takes longer is abandoned and scored `fallback`
    fallback: float = 0.0  # the score of a sample whose reward function raised or timed out
    cache_size: int = 100_000  # (prompt, reply, function) scores remembered; 0: no cache
    # What the Reward service's actor reserves (a reward model on a GPU: num_gpus), and
    # whether it shares trainer rank 0's placement group bundle (the same node and GPU)
    num_cpus: float = 0.0
    num_gpus: float = 0.0
    resources: dict[str, float] = field(default_factory=dict)
    colocate_with_trainer: bool = False

    def validate(self) -> None:
        from rlhf_platform import rewards  # late import: rewards pull in math-verify

        _check_resources("reward", self.resources, self.num_gpus, self.num_cpus)
        if not self.functions:
            raise ConfigError("reward.functions is empty; give at least one reward function")
        for i, fn in enumerate(self.functions):
            _check_reward_function(f"reward.functions[{i}]", fn, (*rewards.REWARD_FUNCTIONS, "reward_model"))
        _duration("reward.timeout_s", self.timeout_s, MAX_REWARD_TIMEOUT_S)
        _finite("reward.fallback", self.fallback, "")
        _at_least("reward.cache_size", self.cache_size, 0)


@dataclass
class EvalSetConfig:
    """One more held-out set, evaluated beside the task's own (`eval.sets`), read and
    checked like the task's data."""

    name: str = ""  # its name in metrics (eval/<name>/accuracy), summary.json and the registry
    path: str = ""  # a source as task.train_path takes it: a file, a folder, a glob or a cached hub name
    split: Optional[str] = None  # as task.eval_split: None: its only split, else "test", else "validation"
    dataset_config: Optional[str] = None  # config of a hub dataset (openai/gsm8k: main)
    prompt_field: Optional[str] = None  # a string, or a list of {role, content} turns (None: task.prompt_field)
    answer_field: Optional[str] = None  # None: task.answer_field
    max_prompts: Optional[int] = None  # the first N prompts (None: all)


@dataclass
class EvalConfig:
    before: bool = True  # evaluate the held-out sets before training
    after: bool = True  # ... and after
    max_new_tokens: int = 24
    # n > 1: besides the greedy reply, n sampled replies per prompt at eval.temperature give
    # pass@n (a prompt counts if any is right) and mean@n (the share of right replies)
    samples_per_prompt: int = 1
    temperature: float = 1.0
    # more held-out sets beside the task's own (named held_out), each reported by name and level
    sets: list[EvalSetConfig] = field(default_factory=list)

    def validate(self) -> None:
        _at_least("eval.max_new_tokens", self.max_new_tokens, 1)
        _between("eval.samples_per_prompt", self.samples_per_prompt, 1, MAX_COUNT)
        _above("eval.temperature", self.temperature, 0)
        names = ["held_out"]
        for i, part in enumerate(self.sets):
            key = f"eval.sets[{i}]"
            _check_named_source(key, part.name, part.path, names)
            if part.max_prompts is not None:
                _at_least(f"{key}.max_prompts", part.max_prompts, 1, " (or null for all)")

    def metric_names(self) -> tuple[str, ...]:
        """The metrics each set reports, by which the gate may judge (gate.metric)."""
        n = self.samples_per_prompt
        return ("accuracy",) if n == 1 else ("accuracy", f"pass@{n}", f"mean@{n}")


@dataclass
class LoggerConfig:
    backend: str = "wandb"  # wandb | none (metrics.jsonl is always written)
    project: str = "rlhf_platform"
    mode: str = "auto"  # auto (online when WANDB_API_KEY is set, else offline; `wandb sync` later) | offline | online
    progress: bool = True  # progress bar on stderr

    def validate(self) -> None:
        _one_of("logger.backend", self.backend, ("wandb", "none"))
        _one_of("logger.mode", self.mode, ("auto", "offline", "online"))


@dataclass
class CheckpointConfig:
    every: int = 0  # save a checkpoint every N optimizer steps (0: never; the gate also saves at its steps)
    keep_last: int = 3  # checkpoints kept on disk besides promoted ones and the run's head
    registry_root: Optional[str] = None  # directory of registry.sqlite (shareable by runs); None: the run directory

    def validate(self) -> None:
        _at_least("checkpoint.every", self.every, 0)
        _at_least("checkpoint.keep_last", self.keep_last, 1)
        if self.registry_root is not None and (not isinstance(self.registry_root, str) or not self.registry_root.strip()):
            raise ConfigError(
                f"checkpoint.registry_root={self.registry_root!r} is not allowed; give a directory (or null for the run directory)"
            )


@dataclass
class GateConfig:
    every: int = 0  # every N steps: checkpoint, evaluate on held-out prompts, compare with the champion (0: off)
    eval_prompts: Optional[int] = None  # held-out prompts the gate evaluates (None: all of them)
    eval_set: str = "held_out"  # which set the gate evaluates: held_out (the task's) or an eval.sets name
    metric: str = "accuracy"  # what it compares: accuracy (greedy) | pass@N | mean@N (N = eval.samples_per_prompt)
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

    def validate(self) -> None:
        _at_least("gate.every", self.every, 0)
        _one_of("gate.on_fail", self.on_fail, ("rollback", "stop", "reject"))
        _at_least("gate.accuracy_tolerance", self.accuracy_tolerance, 0.0)
        for key, value in (("reward_tolerance", self.reward_tolerance), ("max_kl", self.max_kl),
                           ("min_entropy", self.min_entropy), ("max_length_drift", self.max_length_drift)):
            if value is not None:
                _at_least(f"gate.{key}", value, 0.0, " (or null for not gated)")
        _in_range("gate.rollback_lr_factor", self.rollback_lr_factor, 0, 1, open_low=True)
        _above("gate.divergence_max_kl", self.divergence_max_kl, 0)
        _at_least("gate.divergence_min_entropy", self.divergence_min_entropy, 0.0, " (0: off)")
        _in_range("gate.divergence_reward_drop", self.divergence_reward_drop, 0, 1, open_low=True)
        _at_least("gate.divergence_reward_window", self.divergence_reward_window, 1)
        _at_least("gate.divergence_reward_min_baseline", self.divergence_reward_min_baseline, 0.0)
        if self.eval_prompts is not None:
            _at_least("gate.eval_prompts", self.eval_prompts, 1, " (or null for all of them)")


@dataclass
class FaultConfig:
    """Fault injection, to see the guard and the recovery paths act (tests, drills)."""

    lr_spike_step: Optional[int] = None  # this step (counted from 1) runs at lr x lr_spike_factor (a bad update)
    lr_spike_factor: float = 1000.0

    def validate(self) -> None:
        if self.lr_spike_step is not None:
            _at_least("faults.lr_spike_step", self.lr_spike_step, 1, " (or null for off)")
        _above("faults.lr_spike_factor", self.lr_spike_factor, 0)


@dataclass
class CurriculumConfig:
    """The prompt queue's adaptive curriculum (rules in `rlhf_platform/curriculum.py`),
    learnt from the rewards of the prompts the online-RL recipes train. Off by default:
    the queue then draws each level's seeded shuffle, as without this section."""

    enabled: bool = False  # track per-prompt pass rates, and filter / prioritize prompts as below
    solved_threshold: float = 0.5  # a sample whose reward is >= this counts as solved (a verifier gives 1.0 or 0.0)
    history: int = 4  # visits (reported groups) kept per prompt; its pass rate is solved / samples over them
    # none | easy | hard | both: stop drawing prompts solved in every sample (easy) or in none (hard) of their
    # last `filter_visits` visits; a level with too few prompts left gets its filtered ones back (counted)
    filter: str = "both"
    filter_visits: int = 1  # k: the last k visits, all solved or all unsolved, filter a prompt (1 <= k <= history)
    # uniform: the levels' seeded shuffles (filtered prompts passed over) | prioritized: within a level, weight
    # p(1 - p) + epsilon by pass rate p (a prompt not yet visited: 0.25 + epsilon), none twice in a lease
    sampling: str = "prioritized"
    epsilon: float = 0.05  # prioritized: added to every prompt's weight, so every prompt keeps a chance

    def validate(self) -> None:
        _finite("curriculum.solved_threshold", self.solved_threshold, " (a reward)")
        _at_least("curriculum.history", self.history, 1)
        _one_of("curriculum.filter", self.filter, ("none", "easy", "hard", "both"))
        _in_range("curriculum.filter_visits", self.filter_visits, 1, self.history, hint=" (curriculum.history)")
        _one_of("curriculum.sampling", self.sampling, ("uniform", "prioritized"))
        _above("curriculum.epsilon", self.epsilon, 0)


@dataclass
class Config:
    run: RunConfig = field(default_factory=RunConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    weight_sync: WeightSyncConfig = field(default_factory=WeightSyncConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    algo: AlgoConfig = field(default_factory=AlgoConfig)
    critic: CriticConfig = field(default_factory=CriticConfig)
    reference: ReferenceConfig = field(default_factory=ReferenceConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    gate: GateConfig = field(default_factory=GateConfig)
    faults: FaultConfig = field(default_factory=FaultConfig)
    curriculum: CurriculumConfig = field(default_factory=CurriculumConfig)
    resume: Optional[str] = None  # latest | a registry version id: continue run.name from that checkpoint
    # a run directory of a streaming run: train its recorded schedule again, each reply
    # pinned to its recorded weights versions and interruption points (`rlhf replay`)
    replay: Optional[str] = None
    # ray: roles are Ray actors (a local cluster on 127.0.0.1, or `ray.address`) |
    # inprocess: the same role classes called directly in this process, no Ray (unit tests
    # of the scheduler, and machines with torch but no Ray/vLLM)
    executor: str = "ray"


def _one_of(key: str, value: Any, allowed: tuple) -> None:
    if value not in allowed:
        raise ConfigError(f"{key}={value!r} is not allowed; choose one of {', '.join(map(str, allowed))}")


# The range helpers. Each first refuses a value that is not a finite number (NaN
# passes every comparison, inf every lower bound; a bool is not a number here), then
# one out of range; `hint` tells what a special value does, e.g. " (0: off)".

def _finite(key: str, value: Any, allowed: str) -> None:
    """Refuse `value` unless it is a finite int or float; `allowed` ends the message."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{key}={value!r} is not allowed; it must be a number{allowed}")
    if not math.isfinite(value):
        raise ConfigError(f"{key}={value!r} is not allowed; it must be a finite number{allowed}")


def _at_least(key: str, value: float, low: float, hint: str = "") -> None:
    _finite(key, value, f" >= {low}{hint}")
    if value < low:
        raise ConfigError(f"{key}={value!r} is not allowed; it must be >= {low}{hint}")


def _above(key: str, value: float, low: float, hint: str = "") -> None:
    _finite(key, value, f" > {low}{hint}")
    if value <= low:
        raise ConfigError(f"{key}={value!r} is not allowed; it must be > {low}{hint}")


def _in_range(
    key: str, value: float, low: float, high: float, *, open_low: bool = False, open_high: bool = False, hint: str = ""
) -> None:
    """`value` in [low, high]; `open_low` / `open_high` leave that end out."""
    interval = f"{'(' if open_low else '['}{low}, {high}{')' if open_high else ']'}"
    _finite(key, value, f" in {interval}{hint}")
    if value < low or value > high or (open_low and value == low) or (open_high and value == high):
        raise ConfigError(f"{key}={value!r} is not allowed; it must be in {interval}{hint}")


def _between(key: str, value: float, low: float, high: float, hint: str = "") -> None:
    """`value` in [low, high]: `_at_least`'s messages below `low`, then a finite upper bound."""
    _at_least(key, value, low, hint)
    if value > high:
        raise ConfigError(f"{key}={value!r} is not allowed; it must be in [{low}, {high}]{hint}")


def _duration(key: str, value: float, high: float = MAX_DURATION_S) -> None:
    """A duration in seconds: > 0 and at most `high` (past about 2.1e6 s multiprocessing's
    poll overflows, past threading.TIMEOUT_MAX every wait raises)."""
    _above(key, value, 0, " (seconds)")
    if value > high:
        raise ConfigError(f"{key}={value!r} is not allowed; it must be in (0, {high:g}] (seconds)")


def _seed(key: str, value: int) -> None:
    _in_range(key, value, 0, SEED_MAX, hint=" (a seed: torch, numpy and vLLM take it, plus an engine or sample index)")


def _plain_name(key: str, value: Any, hint: str = "", max_len: int = 128) -> None:
    """A name that becomes a path component or an id: letters, digits, _ . - (not . or ..)."""
    if not isinstance(value, str) or not NAME_PATTERN.fullmatch(value) or value in (".", "..") or len(value) > max_len:
        raise ConfigError(
            f"{key}={value!r} is not allowed; give a name of 1 to {max_len} letters, digits, _ . - "
            f"(not . or ..; no / or spaces){hint}"
        )


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_duration_key(name: str) -> bool:
    return name.endswith("_s") or "timeout" in name


def _check_numbers(key: str, value: Any, schema: Any) -> None:
    """Walk `value` (of type `schema`: a config dataclass, at any depth, through its
    fields, list items and dict values) and refuse any number that is not finite, or not
    an int where the schema says int, or an int beyond 32 bits; a field named like a
    duration (`*_s`, `*timeout*`) above MAX_DURATION_S, a field named `seed` outside
    [0, SEED_MAX]. The key is named as the user writes it (`trainer.lr`, `task.weights[1]`,
    `rollout.resources.gpu`). Run once the sections' own checks have run, so no numeric
    key, a new one included, takes NaN, inf or a value that overflows at run time unchecked."""
    if typing.get_origin(schema) in (Union, types.UnionType):  # Optional[X]: None is allowed, else an X
        if value is None:
            return
        schema = _unwrap_optional(schema)
    if dataclasses.is_dataclass(schema):
        hints = typing.get_type_hints(schema)
        for f in dataclasses.fields(schema):
            field_key, field_value = f"{key}.{f.name}" if key else f.name, getattr(value, f.name)
            _check_numbers(field_key, field_value, hints[f.name])
            if _is_number(field_value) and _is_duration_key(f.name):
                _duration(field_key, field_value)
            elif _is_number(field_value) and (f.name == "seed" or f.name.endswith("_seed")):
                _seed(field_key, field_value)
    elif typing.get_origin(schema) is list:
        (item,) = typing.get_args(schema)
        for i, v in enumerate(value):
            _check_numbers(f"{key}[{i}]", v, item)
    elif typing.get_origin(schema) is dict:
        for name, v in value.items():
            _check_numbers(f"{key}.{name}", v, typing.get_args(schema)[1])
    elif schema is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}={value!r} is not allowed; it must be an integer")
        if not -INT_MAX - 1 <= value <= INT_MAX:
            raise ConfigError(f"{key}={value!r} is not allowed; it must be an integer in [{-INT_MAX - 1}, {INT_MAX}]")
    elif schema is float:
        _finite(key, value, "")


def _unwrap_optional(schema: Any) -> Any:
    """X for Optional[X] (None is then allowed), else `schema`."""
    if typing.get_origin(schema) in (Union, types.UnionType):
        (schema,) = [arg for arg in typing.get_args(schema) if arg is not type(None)]
    return schema


# Keys the schema lacks. Hydra refuses a mistyped key (`trainer.lrr=1`) with "use
# +trainer.lrr=1 to append", and OmegaConf turns an added one (`+trainer.lrr=1`,
# `+nonsense.section=3`) into a stray attribute nothing reads: both are refused here,
# naming the key and the closest keys of its section. Dict-typed keys (the `resources`
# of each role: custom Ray resources) are the only ones whose keys the user chooses.

def _unknown_key(section: str, name: str, names: list[str], full_key: str) -> ConfigError:
    where = f"{section}.{name}" if section else name
    message = f"{full_key} is not a config key"
    if full_key != where:
        message += f" ({section or 'the config'} has no key {name!r})"
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.6)
    if close:
        message += "; did you mean " + " or ".join(f"{section}.{c}" if section else c for c in close) + "?"
    else:
        message += f"; the keys of {section or 'the config'} are: {', '.join(names)}"
    return ConfigError(message)


def check_key_path(path: str, schema: Any = None) -> Any:
    """Refuse a dotted key (`trainer.lr`, `task.mixture.0.name`) that the schema has no
    place for, naming it and suggesting the closest keys; a path into a dict-typed key
    (`rollout.resources.gpu`) or past a leaf is left to the schema's types. Returns the
    key's type (None for a path into a dict or past a leaf)."""
    schema, done = schema or Config, []
    for part in path.split("."):
        schema = _unwrap_optional(schema)
        if dataclasses.is_dataclass(schema):
            names = [f.name for f in dataclasses.fields(schema)]
            if part not in names:
                raise _unknown_key(".".join(done), part, names, path)
            schema = typing.get_type_hints(schema)[part]
        elif typing.get_origin(schema) is list and part.isdigit():
            (schema,) = typing.get_args(schema)
        else:  # a dict's own keys, or a path past a leaf (OmegaConf's type error)
            return None
        done.append(part)
    return schema


def check_override_keys(overrides: list[str], groups: tuple[str, ...] = ()) -> None:
    """Refuse command-line overrides whose keys the schema lacks, before Hydra composes
    them (its message for `trainer.lrr=1` tells the user to add `+`). Config groups
    (`recipe=dpo`; `groups`), hydra's own keys, deletions and overrides Hydra cannot
    parse (it reports those itself) are passed over."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception:  # Hydra's own message says what is wrong with the syntax
        return
    for override in parsed:
        key = override.key_or_group
        if override.is_delete() or override.is_hydra_override() or key in groups or "/" in key or override.package is not None:
            continue
        schema = check_key_path(key)
        if schema is not None and not override.is_sweep_override():
            value = override.value()  # a section or a list of them given whole: `reward.functions=[{name: ..}]`
            if isinstance(value, (dict, list)):
                _check_keys(key, value, schema)


def _check_keys(key: str, value: Any, schema: Any) -> None:
    """Refuse keys of the composed config (a plain container: dicts and lists) that the
    schema lacks, at any depth (list items of sections included); dict-typed keys take any."""
    schema = _unwrap_optional(schema)
    if dataclasses.is_dataclass(schema) and isinstance(value, dict):
        names = [f.name for f in dataclasses.fields(schema)]
        hints = typing.get_type_hints(schema)
        for name, v in value.items():
            if name not in names:
                full = f"{key}.{name}" if key else str(name)
                if isinstance(v, dict) and v:  # `+nonsense.section=3`: name the whole key added
                    full += "." + ".".join(_first_path(v))
                raise _unknown_key(key, str(name), names, full)
            _check_keys(f"{key}.{name}" if key else name, v, hints[name])
    elif typing.get_origin(schema) is list and isinstance(value, list):
        (item,) = typing.get_args(schema)
        for i, v in enumerate(value):
            _check_keys(f"{key}[{i}]", v, item)


def _first_path(value: dict) -> list[str]:
    name, v = next(iter(value.items()))
    return [str(name), *(_first_path(v) if isinstance(v, dict) and v else [])]


def max_sample_lag(max_staleness: int, sync_every: int) -> int:
    """Optimizer steps a sample may be behind the policy it trains: (max_staleness + 1) * sync_every - 1."""
    return (max_staleness + 1) * sync_every - 1


def _check_resources(section: str, resources: dict[str, float], num_gpus: float, num_cpus: float) -> None:
    for name, amount in resources.items():
        _at_least(f"{section}.resources.{name}", amount, 0.0)
    _at_least(f"{section}.num_gpus", num_gpus, 0.0)
    _at_least(f"{section}.num_cpus", num_cpus, 0.0)


def _check_cpu_cores(key: str, cores: Optional[list[int]]) -> None:
    if cores is None:
        return
    if not cores:
        raise ConfigError(f"{key}={cores!r} is not allowed; list core numbers (e.g. [0]) or leave it null")
    for i, core in enumerate(cores):
        _between(f"{key}[{i}]", core, 0, MAX_CORE, " (a core number)")


def check_model_path(value: object) -> Path:
    """`model.path` as a directory holding an HF model (its config.json); ConfigError naming the key otherwise."""
    path = Path(str(value)).expanduser()
    if not path.is_dir():
        raise ConfigError(f"model.path={value}: directory does not exist")
    if not (path / "config.json").exists():
        raise ConfigError(f"model.path={value}: no config.json there; expected an HF model directory")
    return path


def _check_named_source(key: str, name: object, path: object, taken: list[str]) -> None:
    """A named source (an eval set, a mixture dataset): a plain name not in `taken` (it
    names metrics, eval sets and prompt ids; added to `taken`) and a path to read."""
    _plain_name(f"{key}.name", name, " (metrics and ids use it)", max_len=64)
    if name in taken:
        raise ConfigError(f"{key}.name={name!r} is taken (by {', '.join(taken)}; held_out is the task's own set); give each its own name")
    taken.append(name)
    if not isinstance(path, str) or not path.strip():
        raise ConfigError(f"{key}.path is required: a file, folder, glob or cached hub name, as task.train_path takes")


def _check_reward_function(key: str, fn: RewardFunctionConfig, allowed: tuple) -> None:
    _one_of(f"{key}.name", fn.name, allowed)
    _finite(f"{key}.weight", fn.weight, "")
    if fn.name == "reward_model":
        if not fn.path or not (Path(fn.path) / "config.json").is_file():
            raise ConfigError(f"{key}.path={fn.path!r}: not a saved reward model directory (train one with recipe=rm)")
    elif fn.path is not None:
        raise ConfigError(f"{key}.path is for name=reward_model only, not {fn.name!r}")


def _check_top_level(cfg: Config) -> None:
    """Keys of `Config` itself (not of a section)."""
    _one_of("executor", cfg.executor, ("ray", "inprocess"))
    if cfg.resume is not None and cfg.resume != "latest" and not str(cfg.resume).isdigit():
        raise ConfigError(f"resume={cfg.resume!r} is not allowed; use resume=latest or resume=<version id> (see `rlhf ckpt list`)")
    if cfg.replay is not None:
        if not (Path(cfg.replay) / "schedule.jsonl").is_file():
            raise ConfigError(f"replay={cfg.replay!r}: not a run directory with a schedule.jsonl")
        if cfg.algo.advantage.estimator == "gae":
            raise ConfigError(
                "replay cannot re-run a PPO run (algo.advantage.estimator=gae): the critic's values were taken when "
                "each group finished, at critic weights the replay does not have then"
            )
        if not cfg.rollout.streaming or cfg.algo.name in ("dpo", "rm"):
            raise ConfigError(
                "replay re-runs a streaming online-RL run (from its start, or with resume= from a checkpoint): it "
                f"needs rollout.streaming=true and recipe grpo, dapo or gspo (got rollout.streaming={cfg.rollout.streaming}, "
                f"algo.name={cfg.algo.name})"
            )


def _check_cross_section(cfg: Config) -> None:
    """Rules that tie keys of different sections together."""
    sets = ["held_out", *(part.name for part in cfg.eval.sets)]
    if cfg.gate.eval_set not in sets:
        raise ConfigError(f"gate.eval_set={cfg.gate.eval_set!r} is not allowed; it must be one of {sets} (eval.sets names)")
    if cfg.gate.metric not in cfg.eval.metric_names():
        raise ConfigError(
            f"gate.metric={cfg.gate.metric!r} is not allowed; with eval.samples_per_prompt={cfg.eval.samples_per_prompt} "
            f"it must be one of {list(cfg.eval.metric_names())}"
        )
    for key, tokens in (("rollout.max_new_tokens", cfg.rollout.max_new_tokens), ("eval.max_new_tokens", cfg.eval.max_new_tokens)):
        if tokens >= cfg.model.max_model_len:
            raise ConfigError(
                f"{key}={tokens} leaves no room for a prompt in model.max_model_len={cfg.model.max_model_len}; "
                f"it must be less than model.max_model_len"
            )
    if cfg.task.pairs_path is not None:
        if cfg.algo.name not in ("dpo", "rm"):
            raise ConfigError(f"task.pairs_path is read by recipe=dpo and recipe=rm only, not algo.name={cfg.algo.name}")
        if not Path(cfg.task.pairs_path).exists():
            raise ConfigError(
                f"task.pairs_path={cfg.task.pairs_path!r}: no such file or directory (a preference dataset: jsonl, "
                "parquet or an HF dataset directory; leave it unset to build pairs from the task)"
            )
    if cfg.critic.num_ranks > 1 and cfg.trainer.zero_stage == 3:
        raise ConfigError(
            "critic.num_ranks > 1 is not allowed with trainer.zero_stage=3: critic rank 0 computes the rollout's "
            "values alone, which ZeRO-3's sharded parameters do not allow; use critic.num_ranks=1 or zero_stage 2"
        )
    if cfg.algo.dapo.overlong_buffer > cfg.rollout.max_new_tokens:
        raise ConfigError(
            f"algo.dapo.overlong_buffer={cfg.algo.dapo.overlong_buffer} is not allowed; it must be <= rollout.max_new_tokens={cfg.rollout.max_new_tokens}"
        )
    _check_colocation(cfg)
    if cfg.critic.colocate_with_trainer and cfg.critic.num_ranks > cfg.trainer.num_ranks:
        raise ConfigError(
            f"critic.colocate_with_trainer needs critic.num_ranks <= trainer.num_ranks (rank i shares trainer rank i's "
            f"bundle); got {cfg.critic.num_ranks} critic ranks for {cfg.trainer.num_ranks} trainer ranks"
        )
    if cfg.algo.mini_batches * cfg.trainer.num_ranks > cfg.rollout.prompts_per_step:
        raise ConfigError(
            f"algo.mini_batches={cfg.algo.mini_batches} is not allowed; with trainer.num_ranks={cfg.trainer.num_ranks} it "
            f"must be <= rollout.prompts_per_step / num_ranks = {cfg.rollout.prompts_per_step // cfg.trainer.num_ranks} "
            "(a mini-batch holds whole prompt groups, at least one for each rank)"
        )
    if cfg.algo.name in ("dpo", "rm") and (cfg.algo.ppo_epochs, cfg.algo.mini_batches) != (1, 1):
        raise ConfigError(f"algo.ppo_epochs and algo.mini_batches apply to the grpo, dapo, gspo and ppo recipes, not algo.name={cfg.algo.name}")


def _check_colocation(cfg: Config) -> None:
    """A service that shares the trainer ranks' placement group bundles needs something
    in them to share (under Ray; in one process placement means nothing)."""
    if cfg.executor != "ray":
        return
    trainer_reserves = cfg.trainer.num_cpus > 0 or cfg.trainer.num_gpus > 0 or any(cfg.trainer.resources.values())
    for section in ("reference", "reward", "critic"):
        part = getattr(cfg, section)
        reserves = part.num_cpus > 0 or part.num_gpus > 0 or any(part.resources.values())
        if part.colocate_with_trainer and not (trainer_reserves or reserves):
            raise ConfigError(
                f"{section}.colocate_with_trainer=true, but neither the trainer ranks nor {section} reserve anything to "
                f"share a bundle of; set trainer.num_gpus / num_cpus / resources (and {section}'s share of them)"
            )


def _check_executor(cfg: Config) -> None:
    """executor=inprocess: one process holds one rank of each group, and no role is pinned apart."""
    if cfg.executor != "inprocess":
        return
    for key, ranks in (("trainer.num_ranks", cfg.trainer.num_ranks), ("critic.num_ranks", cfg.critic.num_ranks)):
        if ranks != 1:
            raise ConfigError(
                f"{key}={ranks} is not allowed with executor=inprocess: one process holds one rank of each group; "
                f"use {key}=1 or executor=ray"
            )
    if cfg.weight_sync.transport == "collective" and cfg.weight_sync.backend == "nccl":
        raise ConfigError(
            "weight_sync.backend=nccl is not allowed with executor=inprocess: the trainer and the engines share one "
            "process (and GPU), which NCCL cannot group; use weight_sync.backend=gloo or auto"
        )
    if cfg.weight_sync.transport == "object_store":
        raise ConfigError(
            "weight_sync.transport=object_store is not allowed with executor=inprocess: there is no Ray object store; "
            "use auto, shared_memory or collective"
        )
    for key, cores in (("rollout.cpu_cores", cfg.rollout.cpu_cores), ("trainer.cpu_cores", cfg.trainer.cpu_cores)):
        if cores is not None:
            raise ConfigError(
                f"{key}={cores!r} is not allowed with executor=inprocess: pinning it would pin the whole process; "
                "leave it null or use executor=ray"
            )


def _check_mixture(cfg: Config) -> None:
    """A mixture's dataset names are apart from eval.sets' (each is an eval set's name)."""
    for i, part in enumerate(cfg.task.mixture):
        if part.name in [s.name for s in cfg.eval.sets]:
            raise ConfigError(f"task.mixture[{i}].name={part.name!r} is taken by an eval.sets entry; give each its own name")


def _check_curriculum(cfg: Config) -> None:
    """The curriculum learns from the rewards of the online-RL recipes' rollouts."""
    if cfg.curriculum.enabled and cfg.algo.name in ("dpo", "rm"):
        raise ConfigError(
            f"curriculum.enabled=true is for the grpo, dapo, gspo and ppo recipes (it learns from their rollouts' "
            f"rewards), not algo.name={cfg.algo.name}; leave curriculum.enabled=false"
        )


def validate(cfg: Config) -> Config:
    """Check values the schema's types cannot; raise ConfigError naming the key."""
    sections = (cfg.run, cfg.ray, cfg.model, cfg.task, cfg.rollout, cfg.weight_sync, cfg.trainer, cfg.algo, cfg.critic,
                cfg.reference, cfg.reward, cfg.eval, cfg.logger, cfg.checkpoint, cfg.gate, cfg.faults, cfg.curriculum)
    for section in sections:
        section.validate()
    _check_numbers("", cfg, Config)  # the backstop: any number no section checked (a new key), and ints typed as ints
    _check_top_level(cfg)
    _check_cross_section(cfg)
    _check_executor(cfg)
    _check_curriculum(cfg)
    _check_mixture(cfg)
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
    from omegaconf import OmegaConf  # here: the dataclasses above work without it (scripts/gpu_check.py)

    # keys the schema lacks (added with + or ++) would merge into attributes nothing reads
    _check_keys("", OmegaConf.to_container(cfg, resolve=False), Config)
    merged = OmegaConf.merge(OmegaConf.structured(Config), cfg)
    return validate(OmegaConf.to_object(merged))
