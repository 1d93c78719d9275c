"""Device discipline: every role moves what enters it to its device at one boundary.

On a CPU-only machine a missing `.to(device)` is invisible (everything is on the CPU).
Here each role's model sits on the `meta` device and its inputs come from the real
collate code (CPU tensors): an input that skips the role's boundary meets the model on
another device and torch raises "Tensor on device cpu is not on the expected device
meta". What runs is the role's own loss / log-prob / value / score path, not a copy.
"""
from __future__ import annotations

import pytest
import torch

from rlhf_platform.batching import collate_group
from rlhf_platform.config import AlgoConfig, ISCorrectionConfig, KLConfig, PolicyLossConfig, TrainerConfig
from rlhf_platform.pairs import pair_trajectories
from rlhf_platform.types import Prompt, TrainBatch, Trajectory, UpdatePlan

META = torch.device("meta")


def _group(with_ref: bool = True) -> list[Trajectory]:
    group = [
        Trajectory("p", "g", [5, 6, 7], [8 + i, 9, 10][: 3 - i], [-1.0] * (3 - i), 0, "stop", advantage=a)
        for i, a in enumerate([1.0, -1.0, 0.5])
    ]
    for t in group:
        t.ref_logprobs = [-1.2] * t.response_length if with_ref else None
        t.values = [0.1] * t.response_length
        t.returns = [1.0] * t.response_length
    return group


def meta(model: torch.nn.Module) -> torch.nn.Module:
    """`model` on the meta device, with eager attention (SDPA's mask code reads the
    mask's values to skip it, which a meta tensor does not have)."""
    for module in model.modules():
        if hasattr(module, "set_attn_implementation"):
            module.set_attn_implementation("eager")
        # Some ops accept a CPU index into a meta weight (an embedding lookup): every
        # module also refuses a tensor argument that is not on the meta device.
        module.register_forward_pre_hook(_inputs_on_meta, with_kwargs=True)
    return model.to(META)


def _inputs_on_meta(module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
    values = [*args, *kwargs.values()]
    stray = [tuple(v.shape) for v in values if isinstance(v, torch.Tensor) and v.device != META]
    if stray:
        raise RuntimeError(f"{type(module).__name__}: inputs {stray} are not on the role's device (meta)")


def _on_meta(role, model: torch.nn.Module, pad_id: int = 0):
    """`role` as its rank would be after setup, with its model on the meta device."""
    role.engine = meta(model)
    role.device = META
    role.pad_id = pad_id
    role.world_size = 1
    return role


@pytest.fixture(scope="module")
def causal_lm(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    return lambda: AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32)


@pytest.mark.parametrize(
    "algo",
    [
        AlgoConfig(kl=KLConfig(coef=0.1, mode="loss"), policy=PolicyLossConfig(entropy_coef=0.01, dual_clip=3.0)),
        AlgoConfig(policy=PolicyLossConfig(loss="gspo", loss_agg="seq_mean_token_mean"), is_correction=ISCorrectionConfig(level="geometric")),
        AlgoConfig(is_correction=ISCorrectionConfig(level="sequence", mode="mask")),
    ],
    ids=["ppo_kl_entropy_dual_clip", "gspo_geometric_is", "sequence_is_mask"],
)
def test_trainer_loss_runs_on_the_ranks_device(tiny_model_dir, causal_lm, algo):
    from rlhf_platform.roles.trainer import Trainer

    trainer = _on_meta(Trainer(str(tiny_model_dir), TrainerConfig(micro_batch_size=4), algo), causal_lm())
    group = _group()
    trainer.plan, trainer.update_version = UpdatePlan([TrainBatch(group, 0)], [8.0], 1), 0
    loss, stats = trainer._micro_step_loss(group, 8.0)
    assert loss.device == META and loss.requires_grad
    assert {v.device for v in stats.values() if isinstance(v, torch.Tensor) and v.device != torch.device("cpu")} == {META}
    assert trainer._logprobs_now(group).device == META  # pi_old's forward and the target-KL check


def test_dpo_pair_loss_runs_on_the_ranks_device(tiny_model_dir, causal_lm):
    from rlhf_platform.roles.trainer import Trainer

    trainer = _on_meta(Trainer(str(tiny_model_dir), TrainerConfig(), AlgoConfig()), causal_lm())
    pairs = [pair_trajectories("a", Prompt("p", "q", (5, 6, 7), "", 0), [11, 12, 2], [13, 2])]
    for traj in pairs[0]:
        traj.ref_logprobs = [-1.5] * traj.response_length
    loss, _ = trainer._pair_loss(pairs, 1, 0.1, "sigmoid", 0.0)
    assert loss.device == META


def test_critic_values_and_loss_run_on_the_ranks_device(tiny_model_dir):
    from rlhf_platform.config import CriticConfig
    from rlhf_platform.roles.critic import Critic
    from rlhf_platform.value_model import ValueModel

    critic = _on_meta(Critic(str(tiny_model_dir), TrainerConfig(), CriticConfig(), AlgoConfig()), ValueModel.from_pretrained(tiny_model_dir))
    group = _group()
    assert critic._values(critic.collate(group)).device == META  # annotate's path
    loss, _ = critic._value_loss(group, 8.0)
    assert loss.device == META


def test_reward_model_trainer_scores_on_the_ranks_device(tiny_model_dir):
    from rlhf_platform.reward_model import RewardModel
    from rlhf_platform.roles.reward_model_trainer import RewardModelTrainer

    role = _on_meta(RewardModelTrainer(str(tiny_model_dir), TrainerConfig()), RewardModel.from_pretrained(tiny_model_dir))
    pairs = [pair_trajectories("a", Prompt("p", "q", (5, 6, 7), "", 0), [11, 12, 2], [13, 2])]
    loss, _ = role._loss(pairs, 1)
    assert loss.device == META


def test_reference_logprobs_run_on_its_device(tiny_model_dir):
    from rlhf_platform.roles.reference import Reference

    reference = Reference(str(tiny_model_dir))
    assert reference.device == torch.device("cpu") and next(reference.model.parameters()).dtype == torch.float32  # auto on a CPU
    meta(reference.model)
    reference.device = META
    assert reference._logprobs(collate_group(_group(with_ref=False), reference.pad_id)).device == META


def test_reward_model_scorer_runs_on_its_device(tiny_model_dir, tmp_path):
    from rlhf_platform.batching import sequence_batch
    from rlhf_platform.reward_model import RewardModel, RewardModelScorer

    RewardModel.from_pretrained(tiny_model_dir).save(tmp_path / "rm", tiny_model_dir)
    scorer = RewardModelScorer(tmp_path / "rm")
    meta(scorer.model)
    scorer.device = META
    with pytest.raises(NotImplementedError, match="meta"):  # the scores reached the boundary back to the CPU
        scorer._scores(*sequence_batch(_group(), scorer.pad_id))


def test_group_batch_moves_every_tensor():
    batch = collate_group(_group(), 0).to(META)
    for name, value in vars(batch).items():
        assert value is None or value.device == META, name
