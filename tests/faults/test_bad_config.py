"""Bad numbers in the config are refused before anything starts, by a `ConfigError`
that names the key as the user writes it and says what is allowed: NaN (which passes
every `<` comparison), +-inf, bools, ints given as floats, and values out of range.

Configs are composed through Hydra the way `rlhf-train` composes them (overrides on the
command line), or built from the dataclasses for what Hydra's own types already refuse
(bools, NaN in an int key). A test enumerates every numeric key of the schema, so a key
added later is covered without touching this file.

Below them, what validated and then broke at run time: durations, seeds and sizes with
no upper bound (a C call overflowed, or a loop ran for ever), keys the schema lacks
(accepted and ignored), run names that leave run.root, and `rlhf-train` leaving a run
directory behind for a config it refused."""
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


# --- upper bounds: values that validated, then broke at run time ---------------------------


def _typed_keys(schema=Config, key="", path=()):
    """(key as the user writes it, path from `Config`, kind, field name, type) for every
    int or float of the schema, as `_numeric_keys` walks it, with the field's own name
    and type (dict values are the user's resources: not listed)."""
    if typing.get_origin(schema) is typing.Union:
        (schema,) = [a for a in typing.get_args(schema) if a is not type(None)]
    origin, args = typing.get_origin(schema), typing.get_args(schema)
    if dataclasses.is_dataclass(schema):
        hints = typing.get_type_hints(schema)
        for f in dataclasses.fields(schema):
            for found in _typed_keys(hints[f.name], f"{key}.{f.name}" if key else f.name, (*path, f.name)):
                yield found if found[3] else (*found[:3], f.name, found[4])
    elif origin is list and dataclasses.is_dataclass(args[0]):
        yield from _typed_keys(args[0], f"{key}[0]", (*path, 0))
    elif origin is list and args[0] in (int, float):
        yield f"{key}[0]", path, "list", "", args[0]
    elif schema in (int, float):
        yield key, path, "value", "", schema


TYPED_KEYS = list(_typed_keys())
DURATION_KEYS = [k for k in TYPED_KEYS if k[3].endswith("_s") or "timeout" in k[3]]
SEED_KEYS = [k for k in TYPED_KEYS if k[3] == "seed" or k[3].endswith("_seed")]
INT_KEYS = [k for k in TYPED_KEYS if k[4] is int]


def test_the_walk_finds_the_duration_seed_and_int_keys():
    assert {k[0] for k in DURATION_KEYS} >= {"reward.timeout_s", "ray.call_timeout_s", "weight_sync.timeout_s"}
    assert {k[0] for k in SEED_KEYS} == {"run.seed", "model.tiny.seed"}
    assert {"task.digits[0]", "task.train_size", "rollout.prompts_per_step", "trainer.num_threads"} <= {k[0] for k in INT_KEYS}


@pytest.mark.parametrize(
    "override,key",
    [
        # above ~2.15e6 s multiprocessing's conn.poll overflows: every reply scored `fallback`
        ("reward.timeout_s=3e6", "reward.timeout_s"),
        ("reward.timeout_s=1e10", "reward.timeout_s"),  # above threading.TIMEOUT_MAX
        ("ray.call_timeout_s=1e10", "ray.call_timeout_s"),
        ("ray.call_timeout_s=3e6", "ray.call_timeout_s"),
        ("weight_sync.timeout_s=1e10", "weight_sync.timeout_s"),
        ("weight_sync.timeout_s=3e6", "weight_sync.timeout_s"),
    ],
)
def test_a_timeout_that_overflows_at_run_time_is_refused(override, key):
    with pytest.raises(ConfigError, match=names_key(key)) as err:
        to_config(compose_cfg(override))
    assert "(0, " in str(err.value) and "seconds" in str(err.value)


@pytest.mark.parametrize("key,path,kind,name,kind_type", DURATION_KEYS, ids=[k[0] for k in DURATION_KEYS])
def test_every_duration_key_has_a_finite_upper_bound(key, path, kind, name, kind_type):
    from rlhf_platform.config import MAX_DURATION_S

    cfg = _base()
    _set_number(cfg, path, kind, MAX_DURATION_S * 3)
    with pytest.raises(ConfigError, match=names_key(key)):
        getattr(cfg, path[0]).validate()
    with pytest.raises(ConfigError, match=names_key(key)):
        validate(cfg)


def test_a_new_duration_or_seed_key_is_bounded_by_the_schema_walk():
    @dataclass
    class _New:
        wait_timeout: float = 5.0
        poll_s: float = 1.0
        seed: int = 0

    _check_numbers("new", _New(), _New)
    for bad, key in ((_New(wait_timeout=1e10), "new.wait_timeout"), (_New(poll_s=3e6), "new.poll_s"), (_New(seed=2**64), "new.seed")):
        with pytest.raises(ConfigError, match=names_key(key)):
            _check_numbers("new", bad, _New)


def test_the_largest_allowed_timeouts_work_where_they_end_up():
    """The bounds are below what the calls the timeouts reach take: a multiprocessing
    poll (a C int of milliseconds), a threading wait (TIMEOUT_MAX), and the reward
    service's wait for a batch scored in several rounds of workers."""
    import multiprocessing
    import threading

    from rlhf_platform.config import MAX_DURATION_S, MAX_REWARD_TIMEOUT_S

    reader, writer = multiprocessing.Pipe(duplex=False)
    writer.send("ready")
    assert reader.poll(MAX_DURATION_S) and reader.poll(MAX_REWARD_TIMEOUT_S)  # returns at once: data waits
    with pytest.raises(OverflowError):
        reader.poll(3e6)  # what reward.timeout_s=3e6 did to every call
    event = threading.Event()
    event.set()
    assert event.wait(MAX_DURATION_S) and event.wait(1000 * MAX_REWARD_TIMEOUT_S)
    assert MAX_DURATION_S < threading.TIMEOUT_MAX


@pytest.mark.parametrize("key,path,kind,name,kind_type", SEED_KEYS, ids=[k[0] for k in SEED_KEYS])
@pytest.mark.parametrize("bad", [-1, 2**32, 2**64, 10**30])
def test_every_seed_key_is_a_32_bit_seed(key, path, kind, name, kind_type, bad):
    cfg = _base()
    _set_number(cfg, path, kind, bad)
    with pytest.raises(ConfigError, match=names_key(key)):
        validate(cfg)


@pytest.mark.parametrize("override,key", [("run.seed=18446744073709551616", "run.seed"), ("model.tiny.seed=99999999999999999999", "model.tiny.seed")])
def test_a_seed_torch_refuses_is_refused(override, key):
    with pytest.raises(ConfigError, match=names_key(key)):
        to_config(compose_cfg("model=tiny", override))


def test_the_largest_seed_plus_an_engine_index_seeds_numpy_and_torch():
    import numpy as np
    import torch

    from rlhf_platform.config import MAX_RANKS, SEED_MAX

    validate(Config(run=dataclasses.replace(Config().run, seed=SEED_MAX)))
    np.random.seed(SEED_MAX + MAX_RANKS)  # engines seed vLLM with run.seed + their index
    torch.manual_seed(SEED_MAX + MAX_RANKS)


@pytest.mark.parametrize(
    "override,key",
    [
        ("task.digits=[5000,1]", "task.digits[0]"),  # 10**5000: past Python's int-to-str limit
        ("task.digits=[1,19]", "task.digits[1]"),
        ("task=count task.count_lengths=[4,16,1000000000] task.weights=[1,1,1]", "task.count_lengths[2]"),
        ("task.train_size=1000000000", "task.train_size"),
        ("task.eval_size=1000000000", "task.eval_size"),
        ("model.max_model_len=100000000", "model.max_model_len"),
        ("rollout.num_engines=100000", "rollout.num_engines"),
        ("rollout.prompts_per_step=1000000000", "rollout.prompts_per_step"),
        ("rollout.samples_per_prompt=1000000000", "rollout.samples_per_prompt"),
        ("rollout.max_staleness=1000000000", "rollout.max_staleness"),
        ("trainer.num_ranks=100000", "trainer.num_ranks"),
        ("trainer.micro_batch_size=1000000000", "trainer.micro_batch_size"),
        ("trainer.sync_every=1000000000", "trainer.sync_every"),
        ("trainer.num_threads=100000", "trainer.num_threads"),
        ("trainer.cpu_cores=[0,100000]", "trainer.cpu_cores[1]"),
        ("algo.ppo_epochs=1000000000", "algo.ppo_epochs"),
        ("eval.samples_per_prompt=1000000000", "eval.samples_per_prompt"),
        ("ray.num_cpus=1000000000", "ray.num_cpus"),
        ("ray.actor_restarts=1000000000", "ray.actor_restarts"),
        ("model=tiny model.tiny.layers=100000", "model.tiny.layers"),
        ("model=tiny model.tiny.vocab_size=100000000", "model.tiny.vocab_size"),
        ("model.lora.enabled=true model.lora.rank=1000000", "model.lora.rank"),
        ("trainer.max_steps=99999999999999999999", "trainer.max_steps"),  # beyond any C int
    ],
)
def test_a_size_that_hangs_or_overflows_is_refused(override, key):
    with pytest.raises(ConfigError, match=names_key(key)) as err:
        to_config(compose_cfg(*override.split()))
    assert "is not allowed" in str(err.value) and "]" in str(err.value)  # the allowed range


@pytest.mark.parametrize("key,path,kind,name,kind_type", INT_KEYS, ids=[k[0] for k in INT_KEYS])
def test_every_int_key_has_an_upper_bound(key, path, kind, name, kind_type):
    cfg = _base()
    _set_number(cfg, path, kind, 2**63)
    with pytest.raises(ConfigError, match=names_key(key)):
        validate(cfg)


def test_the_largest_digits_still_build_rows():
    from rlhf_platform.config import MAX_DIGITS, TaskConfig
    from rlhf_platform.data import arithmetic_rows

    train, held_out = arithmetic_rows(TaskConfig(digits=[MAX_DIGITS], weights=[1.0], train_size=3, eval_size=2), seed=0)
    assert len(train) == 3 and len(held_out) == 2 and all(len(r.answer) <= MAX_DIGITS + 1 for r in train)


@pytest.mark.parametrize(
    "overrides",
    [
        ["task.digits=[1,18]", "task.train_size=1000000", "task.eval_size=0"],
        ["run.seed=2147483647", "model=tiny", "model.tiny.seed=2147483647"],
        ["reward.timeout_s=86400", "ray.call_timeout_s=1e6", "weight_sync.timeout_s=1e6"],
        ["rollout.num_engines=4", "trainer.num_threads=64", "trainer.cpu_cores=[0,8191]", "model.max_model_len=1048576"],
    ],
)
def test_upper_bounds_still_allow_their_largest_value(overrides):
    to_config(compose_cfg(*overrides))


# --- keys the schema lacks ---------------------------------------------------------------


@pytest.mark.parametrize(
    "override,message",
    [
        ("+trainer.lrr=1e-3", "trainer.lrr is not a config key; did you mean trainer.lr?"),
        ("++trainer.lrr=1e-3", "trainer.lrr is not a config key; did you mean trainer.lr?"),
        ("+algo.kl.coeff=0.1", "algo.kl.coeff is not a config key; did you mean algo.kl.coef?"),
        ("+nonsense.section=3", "nonsense.section is not a config key"),
        ("+seed=3", "seed is not a config key"),
    ],
)
def test_an_added_key_the_schema_lacks_is_refused(override, message):
    """OmegaConf turned these into attributes nothing reads: the run went on without them."""
    with pytest.raises(ConfigError) as err:
        to_config(compose_cfg(override))
    assert str(err.value).startswith(message), str(err.value)


def test_a_config_given_whole_is_checked_for_keys_the_schema_lacks():
    """As `rlhf replay` gives a recorded config.json: list items of sections too."""
    from omegaconf import OmegaConf

    data = {"task": {"name": "dataset", "mixture": [{"name": "a", "path": "b.jsonl", "probabilty": 1}]}}
    with pytest.raises(ConfigError, match=r"^task\.mixture\[0\]\.probabilty is not a config key; did you mean task\.mixture\[0\]\.probability\?"):
        to_config(OmegaConf.create(data))
    with pytest.raises(ConfigError, match=r"^trainer\.lrr is not a config key; did you mean trainer\.lr\?"):
        to_config(OmegaConf.create({"trainer": {"lrr": 1e-3}}))


@pytest.mark.parametrize(
    "override,message",
    [
        ("trainer.lrr=1e-3", "trainer.lrr is not a config key; did you mean trainer.lr?"),  # Hydra: "use +trainer.lrr"
        ("+trainer.lrr=1e-3", "trainer.lrr is not a config key; did you mean trainer.lr?"),
        ("rollout.temprature=0.5", "rollout.temprature is not a config key; did you mean rollout.temperature?"),
        ("nonsense.section=3", "nonsense.section is not a config key (the config has no key 'nonsense'); the keys of the config are: run,"),
        ("task.mixture.0.nmae=x", "task.mixture.0.nmae is not a config key; did you mean task.mixture.0.name?"),
        ("reward.functions=[{name:math_answer,wieght:1}]", "reward.functions[0].wieght is not a config key; did you mean reward.functions[0].weight?"),
        ("trainer={lr:1e-3,lrr:1}", "trainer.lrr is not a config key; did you mean trainer.lr?"),
    ],
)
def test_an_override_naming_a_key_the_schema_lacks_suggests_the_closest(override, message):
    from rlhf_platform.commands.train import CONF_GROUPS
    from rlhf_platform.config import check_override_keys

    with pytest.raises(ConfigError) as err:
        check_override_keys([override], CONF_GROUPS)
    assert str(err.value).startswith(message), str(err.value)


def test_overrides_of_real_keys_groups_and_free_form_dicts_pass():
    from rlhf_platform.commands.train import CONF_GROUPS
    from rlhf_platform.config import check_override_keys

    assert set(CONF_GROUPS) == {"recipe", "model", "task", "cluster"}
    check_override_keys([
        "recipe=dpo", "model=tiny", "+task=count", "cluster=local_2ranks", "trainer.lr=1e-3", "model.tiny.layers=2",
        "++rollout.resources={custom:1}", "+trainer.resources.node_a=1", "reward.resources.judge=1",
        "task.mixture=[{name:a,path:b.jsonl,weights:[1.0],reward_functions:[{name:math_answer,weight:1}]}]",
        "eval.sets=[{name:extra,path:x.jsonl,max_prompts:4}]", "hydra.run.dir=/tmp/x", "hydra.verbose=true",
        "~checkpoint.registry_root", "trainer.lr=1e-3,1e-4", "resume=latest", "executor=inprocess", "model.path=null",
    ], CONF_GROUPS)


def _schema_paths(schema=Config, key=""):
    """Every dotted key of the schema, as an override names it (list items as .0)."""
    if typing.get_origin(schema) is typing.Union:
        (schema,) = [a for a in typing.get_args(schema) if a is not type(None)]
    if dataclasses.is_dataclass(schema):
        hints = typing.get_type_hints(schema)
        for f in dataclasses.fields(schema):
            path = f"{key}.{f.name}" if key else f.name
            yield path
            yield from _schema_paths(hints[f.name], path)
    elif typing.get_origin(schema) is list and dataclasses.is_dataclass(typing.get_args(schema)[0]):
        yield from _schema_paths(typing.get_args(schema)[0], f"{key}.0")


def test_every_key_of_the_schema_passes_the_key_check():
    from rlhf_platform.config import check_key_path

    paths = list(_schema_paths())
    assert "algo.kl.coef" in paths and "task.mixture.0.reward_functions.0.weight" in paths and len(paths) > 150
    for path in paths:
        check_key_path(path)


def test_the_resources_dicts_take_keys_of_the_users_choosing():
    cfg = to_config(compose_cfg("++rollout.resources={rollout:1}", "+trainer.resources.node_a=0.5", "++reward.resources={judge:1}"))
    assert cfg.rollout.resources == {"rollout": 1.0} and cfg.trainer.resources == {"node_a": 0.5}


# --- names that become path components ---------------------------------------------------


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "/abs/path", "../up", "a b", "x" * 129, "run\n"])
def test_a_run_name_that_is_not_a_plain_directory_name_is_refused(name):
    """'..' made run.root's parent the run directory; 'a/b' and '/abs' put it elsewhere."""
    from rlhf_platform.config import RunConfig

    with pytest.raises(ConfigError, match=names_key("run.name")):
        RunConfig(name=name).validate()


@pytest.mark.parametrize("override", ["run.name=..", "run.name=a/b", "run.name=/tmp/elsewhere", "run.name=."])
def test_a_run_name_override_that_leaves_run_root_is_refused(override):
    with pytest.raises(ConfigError, match=names_key("run.name")):
        to_config(compose_cfg(override))


@pytest.mark.parametrize("name", ["exp", "grpo-20261127-120000", "run_1.v2", ".hidden", "A-b_c.d"])
def test_plain_run_names_pass(name):
    from rlhf_platform.config import RunConfig

    RunConfig(name=name).validate()


def test_the_default_run_name_passes():
    cfg = to_config(compose_cfg())
    assert cfg.run.name.startswith("grpo-")


@pytest.mark.parametrize(
    "cfg,key",
    [
        (Config(run=dataclasses.replace(Config().run, root="")), "run.root"),  # ${run.root}/${run.name}: /NAME
        (Config(checkpoint=dataclasses.replace(Config().checkpoint, registry_root="")), "checkpoint.registry_root"),
    ],
)
def test_an_empty_directory_key_is_refused(cfg, key):
    with pytest.raises(ConfigError, match=names_key(key)):
        validate(cfg)


@pytest.mark.parametrize("name", ["..", ".", "a/b"])
def test_eval_set_and_mixture_names_are_plain_names_too(name):
    cfg = _base()
    cfg.eval.sets[0].name = name
    with pytest.raises(ConfigError, match=names_key("eval.sets[0].name")):
        validate(cfg)
    cfg = _base()
    cfg.task.mixture[0].name = name
    with pytest.raises(ConfigError, match=names_key("task.mixture[0].name")):
        validate(cfg)


# --- rlhf-train refuses before it creates anything ---------------------------------------


@pytest.mark.parametrize(
    "override,message",
    [
        ("run.name=a/b", "error: run.name='a/b' is not allowed"),
        ("trainer.lrr=1e-3", "error: trainer.lrr is not a config key; did you mean trainer.lr?"),
        ("+nonsense.section=3", "error: nonsense.section is not a config key"),
        ("reward.timeout_s=1e10", "error: reward.timeout_s=10000000000.0 is not allowed"),
    ],
)
def test_rlhf_train_refuses_a_bad_config_before_creating_the_run_directory(tmp_path, override, message):
    import subprocess
    import sys

    root = tmp_path / "runs"
    # were the config accepted, a run without Ray, training or evaluation
    cheap = ["executor=inprocess", "model=tiny", "rollout.backend=hf", "trainer.max_steps=0", "eval.before=false",
             "eval.after=false", "logger.backend=none", "logger.progress=false"]
    proc = subprocess.run(
        [sys.executable, "-c", "from rlhf_platform.commands.train import train_main; train_main()", *cheap, override, f"run.root={root}"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1].startswith(message), proc.stderr[-2000:]
    assert not root.exists() and sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_recorded_config_json_passes_the_key_check():
    """`rlhf replay` gives `to_config` the config.json a run wrote (asdict, secrets scrubbed)."""
    import json
    from dataclasses import asdict

    from omegaconf import OmegaConf

    from rlhf_platform.tracking import scrub_secrets

    cfg = to_config(compose_cfg("++rollout.resources={custom:1}", "reward.functions=[{name:math_answer,weight:1}]"))
    recorded = json.loads(json.dumps(scrub_secrets(asdict(cfg))))
    assert to_config(OmegaConf.create(recorded)) == cfg
