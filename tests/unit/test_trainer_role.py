"""The Trainer role in-process (one DeepSpeed ZeRO-2 rank over gloo, tiny model):
each policy loss and DPO make a real optimizer step."""
from __future__ import annotations

import math

import pytest
import torch

from rlhf_platform.config import AlgoConfig, ISCorrectionConfig, PolicyLossConfig, TrainerConfig
from rlhf_platform.pairs import pair_trajectories
from rlhf_platform.roles.trainer import Trainer
from rlhf_platform.types import Prompt, TrainBatch, Trajectory, UpdatePlan


@pytest.fixture(scope="module")
def trainer(tiny_model_dir, single_rank_env):
    role = Trainer(str(tiny_model_dir), TrainerConfig(lr=1e-2, micro_batch_size=4), AlgoConfig(), loss_agg_constant=8.0)
    role.setup()
    return role


def _plan(trajectories: list[Trajectory], denominator: float, epochs: int = 1) -> UpdatePlan:
    """A one-mini-batch update of `trajectories` normalised by `denominator`."""
    return UpdatePlan([TrainBatch(trajectories, 0, 0)], [denominator], epochs)


def _group(advantages: list[float]) -> list[Trajectory]:
    return [
        Trajectory("p", "g", [5, 6, 7], [8 + i, 9, 10], [-1.0, -1.0, -1.0], 0, "stop", advantage=a)
        for i, a in enumerate(advantages)
    ]


@pytest.mark.parametrize(
    "algo",
    [
        AlgoConfig(),
        AlgoConfig(policy=PolicyLossConfig(loss="gspo", clip_eps_low=3e-4, clip_eps_high=4e-4, loss_agg="seq_mean_token_mean"), is_correction=ISCorrectionConfig(level="none")),
        AlgoConfig(policy=PolicyLossConfig(dual_clip=3.0, loss_agg="seq_sum_const")),
    ],
    ids=["ppo_clip", "gspo", "dual_clip_seq_sum_const"],
)
def test_policy_losses_take_a_step(trainer, algo):
    trainer.algo = algo
    before = trainer.weights_digest()
    metrics = trainer.train_step(_plan(_group([1.0, -1.0, 0.5, -0.5]), 12.0 if algo.policy.loss_agg == "token_mean" else 4.0))
    assert metrics["train/grad_norm"] > 0 and math.isfinite(metrics["train/loss"])
    assert trainer.weights_digest() != before


def test_dpo_step_starts_at_log2_and_learns_the_preference(trainer):
    prompt = Prompt("p", "q", (5, 6, 7), "", 0)
    pairs = pair_trajectories("pair", prompt, [11, 12, 2], [13, 14, 2])
    with torch.no_grad():  # the frozen reference: the current weights
        from rlhf_platform.batching import collate_group
        from rlhf_platform.modeling import shared_prompt_logprobs

        batch = collate_group(pairs, trainer.pad_id)
        ref = shared_prompt_logprobs(trainer.engine.module, batch.prompt_ids, batch.response_ids, batch.response_mask)
    for row, traj in enumerate(pairs):
        traj.ref_logprobs = ref[row, : traj.response_length].tolist()
    first = trainer.train_preference_step(TrainBatch(pairs, 0, 0), num_pairs=1, beta=0.1, loss_type="sigmoid")
    assert first["train/loss"] == pytest.approx(math.log(2), abs=1e-4)  # policy == reference: -log sigmoid(0)
    for _ in range(3):
        last = trainer.train_preference_step(TrainBatch(pairs, 0, 0), num_pairs=1, beta=0.1, loss_type="sigmoid")
    assert last["train/loss"] < first["train/loss"]
    assert last["train/reward_margin"] > 0 and last["train/reward_accuracy"] == 1.0


def test_entropy_bonus_reports_the_exact_entropy(trainer):
    trainer.algo = AlgoConfig(policy=PolicyLossConfig(entropy_coef=0.01))
    metrics = trainer.train_step(_plan(_group([1.0, -1.0]), 6.0))
    # exact entropy of a 400-token vocabulary: positive and at most log(400)
    assert 0.0 < metrics["train/entropy"] <= math.log(400) + 1e-4
    assert metrics["train/grad_norm"] > 0


def test_critic_fits_value_targets(trainer, tiny_model_dir):
    from rlhf_platform.config import CriticConfig
    from rlhf_platform.roles.critic import Critic

    critic = Critic(str(tiny_model_dir), TrainerConfig(micro_batch_size=4), CriticConfig(lr=1e-2, value_clip=None), AlgoConfig())
    critic.setup()  # joins the (already formed) single-rank process group
    group = critic.annotate(_group([0.0, 0.0]))
    assert all(t.values == [0.0, 0.0, 0.0] for t in group)  # the value head starts at zero
    for t in group:
        t.returns = [1.0, 1.0, 1.0]
    losses = [critic.train_step(_plan(group, 6.0))["critic/loss"] for _ in range(6)]
    assert losses[0] == pytest.approx(0.5)  # 0.5 * (0 - 1)^2 per token
    assert losses[-1] < 0.5 * losses[0]
    values = [v for t in critic.annotate(group) for v in t.values]
    assert all(0.2 < v < 1.8 for v in values)


def test_reward_model_learns_pairs_then_is_saved_and_served(trainer, tiny_model_dir, tmp_path):
    from rlhf_platform.config import RewardFunctionConfig
    from rlhf_platform.reward_model import RewardModelScorer
    from rlhf_platform.roles.reward import RewardService
    from rlhf_platform.roles.reward_model_trainer import RewardModelTrainer

    role = RewardModelTrainer(str(tiny_model_dir), TrainerConfig(lr=1e-3, micro_batch_size=2))
    role.setup()
    pairs = pair_trajectories("a", Prompt("p", "q", (5, 6, 7), "", 0), [11, 12, 2], [13, 14, 15, 2]) + pair_trajectories(
        "b", Prompt("p2", "q2", (5, 9), "", 0), [20, 2], [21, 22, 2]
    )
    losses = [role.train_step(TrainBatch(pairs, 0), num_pairs=2)["train/loss"] for _ in range(8)]
    assert losses[-1] < losses[0] and all(math.isfinite(x) for x in losses)
    assert role.evaluate(pairs)["pair_accuracy"] == 1.0
    path = role.save(str(tmp_path / "rm"))
    assert path == str(tmp_path / "rm") and not list(tmp_path.glob(".rm-*"))  # no temp dir left behind
    scores = RewardModelScorer(path).score(pairs)
    assert scores[0] > scores[1] and scores[2] > scores[3]  # chosen above rejected, as trained
    service = RewardService([RewardFunctionConfig("reward_model", 2.0, path)])
    scored = service.score([t for t in pairs])
    assert [t.reward for t in scored] == pytest.approx([2.0 * s for s in scores], rel=1e-5)
    assert scored[0].reward_info["reward_model"] == pytest.approx(scores[0], rel=1e-5)


def test_dpo_loss_is_the_same_whatever_the_pairs_per_micro_batch(trainer):
    pairs = [
        pair_trajectories("a", Prompt("p", "q", (5, 6, 7), "", 0), [11, 12, 2], [13, 2]),
        pair_trajectories("b", Prompt("r", "s", (8, 9), "", 0), [14, 2], [15, 16, 17, 2]),
    ]
    for pair in pairs:
        for traj in pair:
            traj.ref_logprobs = [-1.5] * traj.response_length
    args = (2, 0.1, "sigmoid", 0.0)
    with torch.no_grad():
        together, stats = trainer._pair_loss(pairs, *args)
        apart = sum(trainer._pair_loss([pair], *args)[0] for pair in pairs)
    torch.testing.assert_close(together, apart)
    assert float(stats["loss"]) == pytest.approx(float(together))


def test_saved_state_restores_weights_and_optimizer_and_exports_hf(trainer, tmp_path):
    from transformers import AutoModelForCausalLM

    trainer.algo = AlgoConfig()
    batch = _plan(_group([1.0, -1.0, 0.5, -0.5]), 12.0)
    trainer.train_step(batch)  # so the optimizer has moments to save
    saved_digest = trainer.weights_digest()
    trainer.save_state(str(tmp_path / "policy"))
    first = trainer.train_step(batch)
    after_one_step = trainer.weights_digest()
    trainer.train_step(batch)

    trainer.load_state(str(tmp_path / "policy"))
    assert trainer.weights_digest() == saved_digest
    again = trainer.train_step(batch)  # same Adam moments: the same update
    assert trainer.weights_digest() == after_one_step
    assert again["train/loss"] == pytest.approx(first["train/loss"])

    exported = AutoModelForCausalLM.from_pretrained(tmp_path / "policy" / "hf", dtype=torch.float32)
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        trainer.load_state(str(tmp_path / "policy"))
        expected = trainer.engine.module(input_ids=ids).logits
        torch.testing.assert_close(exported(input_ids=ids).logits, expected)
