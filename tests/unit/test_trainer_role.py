"""The Trainer role in-process (one DeepSpeed ZeRO-2 rank over gloo, tiny model):
each policy loss and DPO make a real optimizer step."""
from __future__ import annotations

import math
import os

import pytest
import torch

from rlhf_platform.config import AlgoConfig, TrainerConfig
from rlhf_platform.preferences import pair_trajectories
from rlhf_platform.roles.group import free_port
from rlhf_platform.roles.trainer import Trainer
from rlhf_platform.types import Prompt, TrainBatch, Trajectory


@pytest.fixture(scope="module")
def trainer(tiny_model_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
    role = Trainer(str(tiny_model_dir), TrainerConfig(lr=1e-2, micro_batch_size=4), AlgoConfig(), loss_agg_constant=8.0)
    role.setup()
    yield role
    torch.distributed.destroy_process_group()


def _group(advantages: list[float]) -> list[Trajectory]:
    return [
        Trajectory("p", "g", [5, 6, 7], [8 + i, 9, 10], [-1.0, -1.0, -1.0], 0, "stop", advantage=a)
        for i, a in enumerate(advantages)
    ]


@pytest.mark.parametrize(
    "algo",
    [
        AlgoConfig(),
        AlgoConfig(policy_loss="gspo", clip_eps_low=3e-4, clip_eps_high=4e-4, loss_agg="seq_mean_token_mean", tis_cap=None),
        AlgoConfig(dual_clip=3.0, loss_agg="seq_sum_const"),
    ],
    ids=["ppo_clip", "gspo", "dual_clip_seq_sum_const"],
)
def test_policy_losses_take_a_step(trainer, algo):
    trainer.algo = algo
    before = trainer.weights_digest()
    version = trainer.get_version()
    metrics = trainer.train_step(TrainBatch(_group([1.0, -1.0, 0.5, -0.5]), 0, 0), denominator=12.0 if algo.loss_agg == "token_mean" else 4.0)
    assert trainer.get_version() == version + 1
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
