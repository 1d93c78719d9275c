import subprocess
import sys
from pathlib import Path

import pytest

from rlhf_platform.commands.train import CONF_DIR
from rlhf_platform.config import (
    AdvantageConfig,
    AlgoConfig,
    ISCorrectionConfig,
    CheckpointConfig,
    ConfigError,
    CriticConfig,
    DAPOConfig,
    GateConfig,
    KLConfig,
    LoggerConfig,
    LoraConfig,
    ModelConfig,
    PolicyLossConfig,
    PreferenceConfig,
    RayConfig,
    RewardConfig,
    RolloutConfig,
    TaskConfig,
    TrainerConfig,
    max_sample_lag,
    to_config,
)
from rlhf_platform.model_store import resolve_model_dir
from support import compose_cfg, small_cfg


SHIPPED_RECIPES = sorted(p.stem for p in (Path(CONF_DIR) / "recipe").glob("*.yaml"))
SHIPPED_CLUSTERS = sorted(p.stem for p in (Path(CONF_DIR) / "cluster").glob("*.yaml"))


@pytest.mark.parametrize(
    "overrides",
    [[], ["model=tiny"], *([f"cluster={c}"] for c in SHIPPED_CLUSTERS), ["task=dataset", "task.train_path=x.jsonl"], ["task=count"]],
)
def test_shipped_configs_validate(overrides):
    cfg = to_config(compose_cfg(*overrides))
    assert cfg.algo.name == "grpo"


@pytest.mark.parametrize("recipe", SHIPPED_RECIPES)
def test_every_shipped_recipe_validates(recipe):
    cfg = to_config(compose_cfg(f"recipe={recipe}"))
    assert cfg.algo.name == recipe


def test_recipes_carry_their_algorithm():
    dapo = to_config(compose_cfg("recipe=dapo")).algo
    assert dapo.dapo.dynamic_sampling and dapo.policy.clip_eps_high > dapo.policy.clip_eps_low and dapo.dapo.overlong_buffer > 0
    gspo = to_config(compose_cfg("recipe=gspo")).algo
    assert gspo.policy.loss == "gspo" and gspo.policy.clip_eps_high < 1e-3
    ppo = to_config(compose_cfg("recipe=ppo")).algo
    assert ppo.advantage.estimator == "gae" and ppo.kl.mode == "reward" and ppo.kl.coef > 0


def test_unknown_key_names_it():
    with pytest.raises(Exception, match="no_such_key"):
        compose_cfg("trainer.no_such_key=1")


@pytest.mark.parametrize(
    "override,key",
    [
        ("rollout.backend=tgi", "rollout.backend"),
        ("rollout.max_staleness=-1", "rollout.max_staleness"),
        ("trainer.zero_stage=4", "trainer.zero_stage"),
        ("task.weights=[1.0]", "task.weights"),
        ("algo.kl.estimator=k9", "algo.kl.estimator"),
        ("algo.advantage.estimator=ppo", "algo.advantage.estimator"),
        ("algo.policy.clip_eps_high=0.1", "algo.policy.clip_eps_high"),
        ("algo.kl.mode=reward", "algo.kl.mode"),
        ("algo.kl.target=0.1", "algo.kl.target"),
        ("recipe=ppo algo.advantage.estimator=group_norm", "algo.advantage.estimator"),
        ("recipe=ppo algo.advantage.gamma=1.5", "algo.advantage.gamma"),
        ("recipe=ppo critic.value_clip=0", "critic.value_clip"),
        ("recipe=ppo critic.num_ranks=0", "critic.num_ranks"),
        ("recipe=ppo critic.num_ranks=2 trainer.zero_stage=3", "critic.num_ranks"),
        ("recipe=dpo algo.preference.beta=-0.1", "algo.preference.beta"),
        ("algo.policy.loss=cispo", "algo.policy.loss"),
        ("algo.policy.dual_clip=0.5", "algo.policy.dual_clip"),
        ("algo.policy.loss_agg=sum", "algo.policy.loss_agg"),
        ("algo.dapo.overlong_buffer=100", "algo.dapo.overlong_buffer"),
        ("checkpoint.every=-1", "checkpoint.every"),
        ("checkpoint.keep_last=0", "checkpoint.keep_last"),
        ("resume=yesterday", "resume"),
        ("recipe=dpo algo.ppo_epochs=2", "algo.ppo_epochs"),
        ("recipe=dpo task.pairs_path=/no/such/pairs.jsonl", "task.pairs_path"),
        ("task.pairs_path=/no/such/pairs.jsonl", "task.pairs_path"),
        ("trainer.placement=pack", "trainer.placement"),
        ("rollout.num_gpus=-1", "rollout.num_gpus"),
        ("++trainer.resources={trainer:-1}", "trainer.resources.trainer"),
        ("rollout.cpu_cores=[]", "rollout.cpu_cores"),
        ("rollout.tensor_parallel_size=0", "rollout.tensor_parallel_size"),
        ("weight_sync.transport=ring", "weight_sync.transport"),
        ("weight_sync.backend=mpi", "weight_sync.backend"),
        ("reference.colocate_with_trainer=true algo.kl.coef=0.01", "reference.colocate_with_trainer"),
        ("reward.num_cpus=-1", "reward.num_cpus"),
        ("task=count task.weights=[0.5,0.5]", "task.weights"),
        ("task=count task.count_lengths=[4,4,8] task.weights=[1,1,1]", "task.count_lengths"),
        ("rollout.tensor_parallel_size=2 rollout.num_gpus=1", "rollout.tensor_parallel_size"),
        ("model.lora.enabled=true model.lora.rank=0", "model.lora.rank"),
        ("model.lora.enabled=true model.lora.alpha=0", "model.lora.alpha"),
        ("model.path=/no/such/model", "model.path"),  # refused before any run directory is made
    ],
)
def test_bad_values_name_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        to_config(compose_cfg(*override.split()))


def test_missing_model_path_is_one_line(tmp_path):
    with pytest.raises(ConfigError) as err:
        resolve_model_dir(ModelConfig(path=str(tmp_path / "nope")))
    assert "model.path" in str(err.value) and "\n" not in str(err.value)


def test_cli_reports_bad_input_in_one_line(tmp_path):
    bad = tmp_path / "nope"
    proc = subprocess.run(
        [sys.executable, "-c", "from rlhf_platform.commands.train import train_main; train_main()", f"model.path={bad}", f"run.root={tmp_path}"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == f"error: model.path={bad}: directory does not exist"
    assert list(tmp_path.iterdir()) == []  # refused before Hydra created the run directory
    proc = subprocess.run(
        [sys.executable, "-c", "from rlhf_platform.commands.train import train_main; train_main()", "trainer.bogus=1", f"run.root={tmp_path}"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].startswith("error: trainer.bogus is not a config key")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "section,key",
    [
        (RayConfig(actor_restarts=-1), "ray.actor_restarts"),
        (ModelConfig(name="gpt5"), "model.name"),
        (LoraConfig(enabled=True, dropout=1.0), "model.lora.dropout"),
        (ModelConfig(lora=LoraConfig(enabled=True, target_modules=[])), "model.lora.target_modules"),
        (TaskConfig(digits=[1, 0], weights=[0.5, 0.5]), r"task.digits\[1\]"),
        (TaskConfig(name="dataset"), "task.train_path"),
        (RolloutConfig(top_p=0.0), "rollout.top_p"),
        (RolloutConfig(cpu_cores=[-1]), "rollout.cpu_cores"),
        (TrainerConfig(sync_every=0), "trainer.sync_every"),
        (TrainerConfig(dist_backend="mpi"), "trainer.dist_backend"),
        (AlgoConfig(name="sft"), "algo.name"),
        (AlgoConfig(advantage=AdvantageConfig(lam=2.0)), "algo.advantage.lam"),
        (AlgoConfig(preference=PreferenceConfig(loss="ipo", label_smoothing=0.1)), "algo.preference.label_smoothing"),
        (AlgoConfig(kl=KLConfig(horizon=0.0)), "algo.kl.horizon"),
        (AlgoConfig(policy=PolicyLossConfig(log_ratio_clamp=0.0)), "algo.policy.log_ratio_clamp"),
        (AlgoConfig(is_correction=ISCorrectionConfig(cap=0.5)), "algo.is_correction.cap"),
        (AlgoConfig(is_correction=ISCorrectionConfig(level="batch")), "algo.is_correction.level"),
        (AlgoConfig(is_correction=ISCorrectionConfig(floor=0.5)), "algo.is_correction.floor"),
        (AlgoConfig(ppo_epochs=0), "algo.ppo_epochs"),
        (AlgoConfig(mini_batches=0), "algo.mini_batches"),
        (AlgoConfig(old_logprobs="engine"), "algo.old_logprobs"),
        (AlgoConfig(target_kl=0.0), "algo.target_kl"),
        (AlgoConfig(target_kl=0.1), "algo.target_kl"),  # one epoch: nothing to stop
        (AlgoConfig(old_logprobs="behaviour"), "algo.is_correction.level=none"),
        (AlgoConfig(policy=PolicyLossConfig(loss="gspo", dual_clip=3.0)), "algo.policy.dual_clip"),
        (AlgoConfig(advantage=AdvantageConfig(reward_norm="batch")), "algo.advantage.reward_norm"),
        (AlgoConfig(dapo=DAPOConfig(max_sampling_rounds=-1)), "algo.dapo.max_sampling_rounds"),
        (CriticConfig(lr=-1.0), "critic.lr"),
        (CriticConfig(resources={"critic": -1.0}), "critic.resources.critic"),
        (RewardConfig(functions=[]), "reward.functions"),
        (RewardConfig(timeout_s=0.0), "reward.timeout_s"),
        (LoggerConfig(mode="sometimes"), "logger.mode"),
        (CheckpointConfig(keep_last=0), "checkpoint.keep_last"),
        (GateConfig(on_fail="panic"), "gate.on_fail"),
        (GateConfig(rollback_lr_factor=2.0), "gate.rollback_lr_factor"),
    ],
)
def test_each_section_validates_its_own_keys(section, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        section.validate()


def test_default_sections_validate():
    for section in (RayConfig(), ModelConfig(), TaskConfig(), RolloutConfig(), TrainerConfig(), AlgoConfig(),
                    CriticConfig(), RewardConfig(), LoggerConfig(), CheckpointConfig(), GateConfig()):
        section.validate()


def test_executor_defaults_to_ray_and_inprocess_validates():
    assert small_cfg().executor == "ray"
    assert small_cfg("executor=inprocess").executor == "inprocess"


@pytest.mark.parametrize(
    "overrides,key",
    [
        (["executor=threads"], "executor"),
        (["executor=inprocess", "trainer.num_ranks=2"], "trainer.num_ranks"),
        (["executor=inprocess", "critic.num_ranks=2"], "critic.num_ranks"),
        (["executor=inprocess", "rollout.cpu_cores=[0]"], "rollout.cpu_cores"),
        (["executor=inprocess", "trainer.cpu_cores=[0]"], "trainer.cpu_cores"),
    ],
)
def test_executor_checks_name_the_key(overrides, key):
    with pytest.raises(ConfigError, match="^" + key.replace(".", r"\.")):
        small_cfg(*overrides)


def test_inprocess_errors_say_why():
    with pytest.raises(ConfigError, match="one process holds one rank"):
        small_cfg("executor=inprocess", "trainer.num_ranks=2")
    with pytest.raises(ConfigError, match="pin the whole process"):
        small_cfg("executor=inprocess", "trainer.cpu_cores=[0]")


def test_ray_executor_allows_several_ranks_and_pinning():
    cfg = small_cfg("trainer.num_ranks=2", "critic.num_ranks=2", "trainer.cpu_cores=[0]")
    assert cfg.trainer.num_ranks == 2 and cfg.trainer.cpu_cores == [0]


@pytest.mark.parametrize("max_staleness,sync_every,lag", [(0, 1, 0), (1, 1, 1), (0, 2, 1), (1, 2, 3)])
def test_max_sample_lag(max_staleness, sync_every, lag):
    assert max_sample_lag(max_staleness, sync_every) == lag


@pytest.mark.parametrize("max_staleness,sync_every", [(0, 1), (0, 3), (2, 1), (3, 4)])
def test_every_staleness_and_sync_every_pair_is_valid(max_staleness, sync_every):
    cfg = small_cfg(f"rollout.max_staleness={max_staleness}", f"trainer.sync_every={sync_every}")
    assert max_sample_lag(cfg.rollout.max_staleness, cfg.trainer.sync_every) == (max_staleness + 1) * sync_every - 1


def test_colocated_services_share_the_trainer_bundles():
    from rlhf_platform.recipes.run_roles import ServicePlacements

    cfg = to_config(compose_cfg(
        "recipe=ppo", "cluster=local_2ranks", "trainer.num_gpus=0.5", "reference.num_gpus=0.25", "reference.colocate_with_trainer=true",
        "algo.kl.coef=0.01", "critic.num_ranks=2", "critic.num_gpus=0.25", "critic.colocate_with_trainer=true",
        "++reward.resources={judge:1}", "reward.colocate_with_trainer=true",
    ))
    placements = ServicePlacements.of(cfg, wants_reference=True, train_policy=True)
    assert placements.colocated == {"reference": [0], "reward": [0], "critic": [0, 1]}
    assert placements.bundles(cfg.trainer.num_ranks) == [{"GPU": 1.0, "judge": 1.0}, {"GPU": 0.75}]
    alone = ServicePlacements.of(to_config(compose_cfg("reference.num_gpus=1")), wants_reference=True, train_policy=True)
    assert alone.colocated == {} and alone.services["reference"].num_gpus == 1.0


def test_a_colocated_critic_needs_a_trainer_rank_each():
    with pytest.raises(ConfigError, match="critic.colocate_with_trainer"):
        to_config(compose_cfg("recipe=ppo", "critic.num_ranks=2", "critic.colocate_with_trainer=true"))
