"""Bad numbers in the config are refused before anything starts, by a `ConfigError`
that names the key as the user writes it and says what is allowed: NaN (which passes
every `<` comparison), +-inf, bools, ints given as floats, and values out of range.

Configs are composed through Hydra the way `rlhf-train` composes them (overrides on the
command line), or built from the dataclasses for what Hydra's own types already refuse
(bools, NaN in an int key). A test enumerates every numeric key of the schema, so a key
added later is covered without touching this file."""
from __future__ import annotations

import dataclasses
import math
import re
import typing
from dataclasses import dataclass, field
from typing import Optional

import pytest

from rlhf_platform.config import (
    Config,
    ConfigError,
    EvalSetConfig,
    GateConfig,
    LoraConfig,
    MixtureDatasetConfig,
    ModelConfig,
    RewardFunctionConfig,
    RolloutConfig,
    TrainerConfig,
    _check_numbers,
    to_config,
    validate,
)
from support import compose_cfg


def names_key(key: str) -> str:
    """A regex: the message starts with `key=` (the value follows)."""
    return "^" + re.escape(key) + "="


@pytest.mark.parametrize(
    "override,key",
    [
        # the keys of issue 17
        ("trainer.lr=nan", "trainer.lr"),
        ("trainer.lr=inf", "trainer.lr"),
        ("trainer.lr=-1e-5", "trainer.lr"),
        ("reward.timeout_s=nan", "reward.timeout_s"),  # would score every reply `fallback`
        ("reward.timeout_s=inf", "reward.timeout_s"),
        ("reward.timeout_s=0", "reward.timeout_s"),
        ("rollout.temperature=nan", "rollout.temperature"),
        ("rollout.temperature=inf", "rollout.temperature"),
        ("rollout.temperature=-0.5", "rollout.temperature"),
        ("algo.kl.coef=nan", "algo.kl.coef"),
        ("algo.kl.coef=inf", "algo.kl.coef"),
        ("algo.kl.coef=-0.1", "algo.kl.coef"),
        ("trainer.grad_clip=nan", "trainer.grad_clip"),
        ("trainer.grad_clip=inf", "trainer.grad_clip"),
        ("trainer.grad_clip=-1", "trainer.grad_clip"),
        ("trainer.weight_decay=nan", "trainer.weight_decay"),
        ("trainer.weight_decay=inf", "trainer.weight_decay"),
        ("trainer.weight_decay=-0.01", "trainer.weight_decay"),
        ("rollout.max_new_tokens=0", "rollout.max_new_tokens"),
        ("eval.max_new_tokens=0", "eval.max_new_tokens"),
        ("model.max_model_len=0", "model.max_model_len"),
        ("gate.accuracy_tolerance=nan", "gate.accuracy_tolerance"),
        ("gate.accuracy_tolerance=-0.1", "gate.accuracy_tolerance"),
        ("gate.reward_tolerance=nan", "gate.reward_tolerance"),
        ("gate.reward_tolerance=-1", "gate.reward_tolerance"),
        ("task.weights=[0.5,nan]", "task.weights[1]"),
        ("task.weights=[inf,0.5]", "task.weights[0]"),
        ("task.weights=[0.5,-1]", "task.weights[1]"),
        ("task.weights=[0,0]", "task.weights"),  # no level to draw from
        # the rest of the float keys
        ("rollout.top_p=nan", "rollout.top_p"),
        ("rollout.kv_cache_gib=0", "rollout.kv_cache_gib"),
        ("rollout.gpu_memory_utilization=1.5", "rollout.gpu_memory_utilization"),
        ("rollout.gpu_memory_utilization=nan", "rollout.gpu_memory_utilization"),
        ("rollout.num_cpus=-1", "rollout.num_cpus"),
        ("++rollout.resources={rollout:nan}", "rollout.resources.rollout"),
        ("algo.advantage.gamma=nan", "algo.advantage.gamma"),
        ("algo.advantage.lam=inf", "algo.advantage.lam"),
        ("algo.advantage.norm_eps=nan", "algo.advantage.norm_eps"),
        ("algo.advantage.reward_clip=nan", "algo.advantage.reward_clip"),
        ("algo.policy.clip_eps_low=nan", "algo.policy.clip_eps_low"),
        ("algo.policy.clip_eps_high=inf", "algo.policy.clip_eps_high"),
        ("algo.policy.dual_clip=nan", "algo.policy.dual_clip"),
        ("algo.policy.log_ratio_clamp=inf", "algo.policy.log_ratio_clamp"),
        ("algo.policy.loss_agg_constant=nan", "algo.policy.loss_agg_constant"),
        ("algo.policy.entropy_coef=nan", "algo.policy.entropy_coef"),
        ("algo.is_correction.cap=inf", "algo.is_correction.cap"),
        ("algo.is_correction.mode=mask algo.is_correction.floor=nan", "algo.is_correction.floor"),
        ("algo.kl.horizon=nan", "algo.kl.horizon"),
        ("algo.kl.target=nan", "algo.kl.target"),
        ("algo.target_kl=nan", "algo.target_kl"),
        ("algo.dapo.overlong_penalty=nan", "algo.dapo.overlong_penalty"),
        ("algo.preference.beta=inf", "algo.preference.beta"),
        ("algo.preference.label_smoothing=nan", "algo.preference.label_smoothing"),
        ("algo.preference.rm_held_out=nan", "algo.preference.rm_held_out"),
        ("weight_sync.bucket_mb=nan", "weight_sync.bucket_mb"),
        ("weight_sync.timeout_s=nan", "weight_sync.timeout_s"),
        ("critic.lr=nan", "critic.lr"),
        ("critic.value_clip=inf", "critic.value_clip"),
        ("critic.num_cpus=-1", "critic.num_cpus"),
        ("trainer.num_cpus=nan", "trainer.num_cpus"),
        ("reference.num_gpus=inf", "reference.num_gpus"),
        ("reward.fallback=nan", "reward.fallback"),
        ("reward.functions=[{name:math_answer,weight:nan}]", "reward.functions[0].weight"),
        ("gate.max_kl=nan", "gate.max_kl"),
        ("gate.min_entropy=-1", "gate.min_entropy"),
        ("gate.max_length_drift=inf", "gate.max_length_drift"),
        ("gate.rollback_lr_factor=nan", "gate.rollback_lr_factor"),
        ("gate.divergence_max_kl=nan", "gate.divergence_max_kl"),
        ("gate.divergence_min_entropy=nan", "gate.divergence_min_entropy"),
        ("gate.divergence_reward_drop=nan", "gate.divergence_reward_drop"),
        ("gate.divergence_reward_min_baseline=nan", "gate.divergence_reward_min_baseline"),
        ("faults.lr_spike_factor=nan", "faults.lr_spike_factor"),
        ("model.lora.enabled=true model.lora.alpha=nan", "model.lora.alpha"),
        ("model.lora.enabled=true model.lora.dropout=nan", "model.lora.dropout"),
        # int keys out of range (Hydra itself refuses NaN and inf in an int key)
        ("run.seed=-1", "run.seed"),
        ("ray.num_cpus=-1", "ray.num_cpus"),
        ("ray.metrics_export_port=70000", "ray.metrics_export_port"),
        ("trainer.num_threads=0", "trainer.num_threads"),
        ("faults.lr_spike_step=0", "faults.lr_spike_step"),
        ("gate.eval_prompts=0", "gate.eval_prompts"),
        ("model.tiny.layers=0", "model.tiny.layers"),
        ("model.tiny.heads=3", "model.tiny.hidden"),  # 128 hidden units do not split into 3 heads
        ("task=count task.count_lengths=[0,4,8] task.weights=[1,1,1]", "task.count_lengths[0]"),
        ("trainer.cpu_cores=[0,-2]", "trainer.cpu_cores[1]"),
    ],
)
def test_bad_numbers_name_the_key(override, key):
    with pytest.raises(ConfigError, match=names_key(key)) as err:
        to_config(compose_cfg(*override.split()))
    message = str(err.value)
    assert "is not allowed" in message and "\n" not in message
    value = override.split()[-1].split("=", 1)[1]
    if value in ("nan", "inf") or "nan" in value or "inf" in value:
        assert "finite number" in message, message


@pytest.mark.parametrize(
    "section,key,message",
    [
        (TrainerConfig(lr=True), "trainer.lr", "must be a number >= 0.0"),
        (TrainerConfig(grad_clip="1.0"), "trainer.grad_clip", "must be a number >= 0.0"),
        (RolloutConfig(temperature=-math.inf), "rollout.temperature", "finite number >= 0.0"),
        (GateConfig(rollback_lr_factor=math.nan), "gate.rollback_lr_factor", "finite number in (0, 1]"),
        (ModelConfig(lora=LoraConfig(enabled=True, rank=math.nan)), "model.lora.rank", "finite number >= 1"),
    ],
)
def test_range_helpers_refuse_what_is_not_a_finite_number(section, key, message):
    with pytest.raises(ConfigError, match=names_key(key)) as err:
        section.validate()
    assert message in str(err.value)


@pytest.mark.parametrize(
    "cfg,key,message",
    [
        (Config(trainer=TrainerConfig(zero_stage=True)), "trainer.zero_stage", "must be an integer"),  # True == 1
        (Config(rollout=RolloutConfig(num_engines=1.5)), "rollout.num_engines", "must be an integer"),
        (Config(trainer=TrainerConfig(max_steps=math.nan)), "trainer.max_steps", "finite number"),
    ],
)
def test_int_keys_take_ints_only(cfg, key, message):
    with pytest.raises(ConfigError, match=names_key(key)) as err:
        validate(cfg)
    assert message in str(err.value)


@pytest.mark.parametrize(
    "overrides",
    [
        ["trainer.grad_clip=0"],  # 0: no clipping
        ["trainer.weight_decay=0.1", "trainer.lr=0"],
        ["rollout.temperature=0", "rollout.top_p=1"],
        ["rollout.gpu_memory_utilization=1.0", "rollout.kv_cache_gib=0.5"],
        ["gate.accuracy_tolerance=0", "gate.reward_tolerance=0", "gate.max_kl=0", "gate.min_entropy=0", "gate.max_length_drift=null"],
        ["task.weights=[0,1]", "reward.fallback=-1", "reward.functions=[{name:math_answer,weight:-0.5}]"],
        ["algo.kl.coef=0", "algo.advantage.gamma=0", "algo.advantage.lam=1", "algo.policy.clip_eps_low=0"],
        ["ray.num_cpus=0", "ray.metrics_export_port=8080", "trainer.num_threads=1", "faults.lr_spike_step=1"],
    ],
)
def test_boundary_values_are_still_allowed(overrides):
    to_config(compose_cfg(*overrides))


# --- every numeric key of the schema, found by walking it --------------------------------


def _numeric_keys(schema=Config, key="", path=()):
    """(key as the user writes it, path of attributes and indices from `Config`, kind)
    for every number the schema holds: a field, the first item of a list of numbers
    (or of a list of sections), a value of a dict of numbers."""
    if typing.get_origin(schema) is typing.Union:
        (schema,) = [a for a in typing.get_args(schema) if a is not type(None)]
    origin, args = typing.get_origin(schema), typing.get_args(schema)
    if dataclasses.is_dataclass(schema):
        hints = typing.get_type_hints(schema)
        for f in dataclasses.fields(schema):
            yield from _numeric_keys(hints[f.name], f"{key}.{f.name}" if key else f.name, (*path, f.name))
    elif origin is list and dataclasses.is_dataclass(args[0]):
        yield from _numeric_keys(args[0], f"{key}[0]", (*path, 0))
    elif origin is list and args[0] in (int, float):
        yield f"{key}[0]", path, "list"
    elif origin is dict and args[1] in (int, float):
        yield f"{key}.probe", path, "dict"
    elif schema in (int, float):
        yield key, path, "value"


def _base() -> Config:
    """The default config, with the sections whose checks are conditional switched on."""
    cfg = Config()
    cfg.model.lora.enabled = True
    cfg.eval.sets = [EvalSetConfig(name="extra", path="extra.jsonl")]  # a list of sections: one item to walk into
    cfg.task.name, cfg.task.mixture = "dataset", [
        MixtureDatasetConfig(name="mix", path="mix.jsonl", weights=[1.0, 1.0], reward_functions=[RewardFunctionConfig()])
    ]
    return cfg


def _set_number(cfg: Config, path: tuple, kind: str, value: float) -> None:
    *parents, last = path
    obj = cfg
    for step in parents:
        obj = obj[step] if isinstance(step, int) else getattr(obj, step)
    if kind == "list":
        items = list(getattr(obj, last) or [0])
        items[0] = value
        setattr(obj, last, items)
    elif kind == "dict":
        setattr(obj, last, {"probe": value})
    else:
        setattr(obj, last, value)


NUMERIC_KEYS = list(_numeric_keys())


def test_the_walk_finds_the_numeric_keys():
    keys = {key for key, _, _ in NUMERIC_KEYS}
    expected = {"run.seed", "trainer.lr", "trainer.grad_clip", "trainer.weight_decay", "reward.timeout_s",
                "rollout.temperature", "algo.kl.coef", "gate.accuracy_tolerance", "task.weights[0]",
                "reward.functions[0].weight", "rollout.resources.probe", "model.tiny.hidden", "faults.lr_spike_step"}
    assert expected <= keys and len(keys) > 80
    validate(_base())  # the base the test below breaks one key of is valid


@pytest.mark.parametrize("bad", [math.nan, math.inf], ids=["nan", "inf"])
@pytest.mark.parametrize("key,path,kind", NUMERIC_KEYS, ids=[key for key, _, _ in NUMERIC_KEYS])
def test_every_numeric_key_refuses_nan_and_inf(key, path, kind, bad):
    """Each key's own section refuses it (its range check), and so does the whole config."""
    cfg = _base()
    _set_number(cfg, path, kind, bad)
    with pytest.raises(ConfigError, match=names_key(key)):
        getattr(cfg, path[0]).validate()
    with pytest.raises(ConfigError, match=names_key(key)):
        validate(cfg)


@dataclass
class _UncheckedSection:
    """A section as a new key might arrive: numbers, and no range check of its own."""

    ratio: float = 0.5
    steps: Optional[int] = None
    sizes: list[int] = field(default_factory=lambda: [1, 2])
    shares: dict[str, float] = field(default_factory=dict)



@pytest.mark.parametrize(
    "section,key",
    [
        (_UncheckedSection(ratio=math.nan), "new.ratio"),
        (_UncheckedSection(steps=math.inf), "new.steps"),
        (_UncheckedSection(sizes=[1, True]), "new.sizes[1]"),
        (_UncheckedSection(shares={"gpu": -math.inf}), "new.shares.gpu"),
    ],
)
def test_the_schema_walk_catches_a_key_without_its_own_check(section, key):
    _check_numbers("new", _UncheckedSection(), _UncheckedSection)
    with pytest.raises(ConfigError, match=names_key(key)):
        _check_numbers("new", section, _UncheckedSection)


@pytest.mark.parametrize("key", ["rollout.max_new_tokens", "eval.max_new_tokens"])
def test_a_reply_budget_that_leaves_no_room_for_a_prompt_is_named(key):
    with pytest.raises(ConfigError, match=rf"{key}=512 leaves no room for a prompt in model.max_model_len=512"):
        validate(to_config(compose_cfg("model.max_model_len=512", f"{key}=512")))


def test_the_reward_collapse_check_sees_its_whole_window():
    """gate.divergence_reward_window above the old fixed history of 8 steps used to turn the
    check off silently."""
    from rlhf_platform.divergence import DivergenceWatch

    watch = DivergenceWatch(GateConfig(divergence_reward_window=12, divergence_reward_drop=0.5))
    for _ in range(12):
        assert watch.check({"rollout/reward_mean": 1.0}) is None
    assert "reward collapsed" in watch.check({"rollout/reward_mean": 0.1})
