"""Multi-epoch, multi-mini-batch policy updates of the Trainer role (one DeepSpeed ZeRO-2
rank over gloo, tiny model): pi_old taken once at the step's start, the epochs x
mini-batches optimizer steps, `target_kl` early stop, `old_logprobs=behaviour`, the
importance-sampling correction and the train-inference mismatch metric.

The parity tests run the real `Trainer.train_step` against TRL's GRPO path with
num_iterations > 1 (trl==1.16.0): a plain torch copy of the same weights is trained with
torch's AdamW (the trainer's hyper-parameters), gradient clipping at `trainer.grad_clip`
and, for each optimizer step, the loss of TRL's `GRPOTrainer._compute_loss` (run on a stub
`self` as in test_trl_parity, its forward replaced by our `shared_prompt_logprobs` on the
copy: the parity is about the loss, the epochs and the old policy, not the forward).
TRL's schedule for num_iterations=2, steps_per_generation=2, gradient_accumulation_steps=1
(`_prepare_inputs`, trl/trainer/grpo_trainer.py:1536-1546): old logps computed once from
the weights before any update (`_generate_and_score_completions`, lines 2642-2656, since
gradient_accumulation_steps % (steps_per_generation * num_iterations) != 0), the
generation batch split in 2 (`split_tensor_dict`), step s trains on part s % 2.
"""
from __future__ import annotations

import math
from types import MethodType

import pytest
import torch
from torch.testing import assert_close
from trl.trainer.utils import split_tensor_dict

from rlhf_platform.algos.importance import importance_weights
from rlhf_platform.algos.losses import aggregate_denominator
from rlhf_platform.batching import collate_group, prompt_groups
from rlhf_platform.config import AlgoConfig, ISCorrectionConfig, PolicyLossConfig, TrainerConfig
from rlhf_platform.modeling import shared_prompt_logprobs
from rlhf_platform.roles.trainer import Trainer
from rlhf_platform.types import TrainBatch, Trajectory, UpdatePlan
from test_trl_parity import _grpo_trainer_stub  # tests/unit is on sys.path (rootdir-less test dir)

LR = 1e-2  # large, so that the second epoch sees ratios far from 1 and the clip is active
TEMPERATURE = 0.9  # the trainer's sampling temperature: every logprob here is computed at it
VERSION = 3
# Two prompts, four samples each: responses of different lengths, advantages of both signs.
PROMPTS = [[5, 6, 7], [9, 10, 11, 12]]
RESPONSES = [
    [[20, 21, 22], [23, 24, 25, 26, 27], [28, 29], [30, 31, 32, 33]],
    [[40, 41, 42, 43], [44], [45, 46, 47], [48, 49, 50, 51, 52]],
]
ADVANTAGES = [[1.0, -0.5, 0.8, -1.2], [-0.7, 1.1, -0.3, 0.6]]


def _new_trainer(model_dir, algo: AlgoConfig) -> Trainer:
    role = Trainer(str(model_dir), TrainerConfig(lr=LR, micro_batch_size=8, num_threads=1), algo, temperature=TEMPERATURE)
    role.setup()  # joins the session's single-rank process group
    return role


@pytest.fixture(scope="module", autouse=True)
def _restore_torch_threads():
    """The trainers here run on one thread (fast on a busy machine, and one reduction
    order); later modules get the process's thread count back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def trainer(tiny_model_dir, single_rank_env):
    """Shared by the by-hand tests: its weights and Adam moments carry over from test to
    test, so each test takes what it compares against inside itself."""
    return _new_trainer(tiny_model_dir, AlgoConfig())


def _trajectories(version: int = VERSION, behaviour: float = -1.0) -> list[Trajectory]:
    return [
        Trajectory(f"p{g}", f"g{g}", list(PROMPTS[g]), list(resp), [behaviour] * len(resp), version, "stop", advantage=adv)
        for g in range(len(PROMPTS))
        for resp, adv in zip(RESPONSES[g], ADVANTAGES[g])
    ]


def _plan(trajectories: list[Trajectory], parts: int, epochs: int, loss_agg: str = "token_mean") -> UpdatePlan:
    """The trajectories cut into `parts` mini-batches of whole groups, as the recipe builds it."""
    minis = TrainBatch(trajectories, trajectories[0].weight_version).split(parts)
    denominators = [aggregate_denominator([t.response_length for t in mb.trajectories], loss_agg) for mb in minis]
    return UpdatePlan(minis, denominators, epochs)


@torch.no_grad()
def _logprobs(model, trajectories: list[Trajectory], pad_id: int, width: int | None = None) -> torch.Tensor:
    """[n, width] per-token logprobs of `trajectories` (rows in their order) at TEMPERATURE,
    the prompt of each group run once, as the trainer does."""
    return _logprobs_grad(model, trajectories, pad_id, width)


def _logprobs_grad(model, trajectories: list[Trajectory], pad_id: int, width: int | None = None) -> torch.Tensor:
    width = width or max(t.response_length for t in trajectories)
    rows = []
    for group in prompt_groups(trajectories, len(trajectories)):
        batch = collate_group(group, pad_id)
        lp = shared_prompt_logprobs(model, batch.prompt_ids, batch.response_ids, batch.response_mask, TEMPERATURE)
        rows.append(torch.nn.functional.pad(lp, (0, width - lp.shape[1])))
    out = torch.cat(rows)
    order = [id(t) for group in prompt_groups(trajectories, len(trajectories)) for t in group]
    assert order == [id(t) for t in trajectories], "rows must come grouped by prompt"
    return out


def _mask(trajectories: list[Trajectory], width: int) -> torch.Tensor:
    return (torch.arange(width).unsqueeze(0) < torch.tensor([[t.response_length] for t in trajectories])).long()


# ---------------------------------------------------------------------------------------------
# Parity with TRL's GRPO num_iterations > 1 path
# ---------------------------------------------------------------------------------------------


def _trl_stub(model, trajectories, pad_id, loss_type, level, eps_low, eps_high, width, steps_per_generation):
    """A GRPOTrainer that runs only `_compute_loss`; its forward is `model`'s logprobs of the
    rows named by `stub.rows` (set before each call)."""
    stub = _grpo_trainer_stub(loss_type, level, eps_low, eps_high, width, 1, steps_per_generation)

    def per_token_logps_and_entropies(self, _model, input_ids, attention_mask, logits_to_keep, **kwargs):
        assert logits_to_keep == width
        logps = _logprobs_grad(model, [trajectories[i] for i in self.rows.tolist()], pad_id, width)
        return logps, torch.zeros_like(logps.detach()), None

    stub._get_per_token_logps_and_entropies = MethodType(per_token_logps_and_entropies, stub)
    return stub


def _clip_grad_norm(model: torch.nn.Module, max_norm: float) -> torch.Tensor:
    """Gradient clipping to `max_norm`, as torch's `clip_grad_norm_` but in DeepSpeed's
    rounding (ZeRO `get_grad_norm_direct` + `unscale_and_clip_grads`): per-tensor norms in
    float64, their squares summed and cast to float32, grads divided by (norm + 1e-6) /
    max_norm. Same math; torch's fp32 CPU norm of the tied embedding's gradient is off by
    ~1e-5 relative, and Adam amplifies a difference in the clip coefficient."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    total = torch.stack([torch.linalg.vector_norm(g.double()) for g in grads]).pow(2).sum().float().pow(0.5)
    scale = torch.clamp((total + 1e-6) / max_norm, min=1.0)
    for g in grads:
        g.mul_(1.0 / scale)
    return total


def _trl_reference_run(trainer, model_dir, plan, loss_type, level, eps_low, eps_high, retake_old=None):
    """TRL's updates from the trainer's current weights: (final model, per-step losses,
    per-step clip fractions). `retake_old` (a negative control, not TRL): "step" or
    "epoch" takes the old logps again before every optimizer step or every epoch."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.load_state_dict({k: v.detach().clone() for k, v in trainer.engine.module.state_dict().items()})
    for param in model.parameters():  # fresh, 64-byte aligned storage, as the engine's flat buffer has:
        param.data = param.data.clone()  # a CPU gemv's rounding depends on its weight's alignment
    model.train()
    group = trainer.optimizer.param_groups[0]
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=group["lr"], betas=group["betas"], eps=group["eps"], weight_decay=group["weight_decay"]
    )
    trajectories = plan.trajectories
    width = max(t.response_length for t in trajectories)
    steps_per_generation = len(plan.mini_batches)
    sizes = {len(mb) for mb in plan.mini_batches}
    assert len(sizes) == 1, "split_tensor_dict cuts equal parts"
    generation_batch = {
        "prompt_ids": torch.zeros(len(trajectories), 1, dtype=torch.long),  # unused by the stubbed forward
        "prompt_mask": torch.ones(len(trajectories), 1, dtype=torch.long),
        "completion_ids": torch.zeros(len(trajectories), width, dtype=torch.long),
        "completion_mask": _mask(trajectories, width),
        "advantages": torch.tensor([t.advantage for t in trajectories]),
        # computed once, before any update (TRL's _generate_and_score_completions)
        "old_per_token_logps": _logprobs(model, trajectories, trainer.pad_id, width),
        "rows": torch.arange(len(trajectories)),  # which trajectories a part holds (ignored by TRL)
    }
    buffered = split_tensor_dict(generation_batch, steps_per_generation)
    stub = _trl_stub(model, trajectories, trainer.pad_id, loss_type, level, eps_low, eps_high, width, steps_per_generation)
    losses, clip_fractions = [], []
    for step in range(plan.epochs * steps_per_generation):
        if retake_old == "step" or (retake_old == "epoch" and step % steps_per_generation == 0):
            generation_batch["old_per_token_logps"] = _logprobs(model, trajectories, trainer.pad_id, width)
            buffered = split_tensor_dict(generation_batch, steps_per_generation)
        inputs = buffered[step % steps_per_generation]  # TRL's _prepare_inputs
        stub.rows = inputs["rows"]
        optimizer.zero_grad()
        loss = stub._compute_loss(stub.model, inputs)
        loss.backward()
        _clip_grad_norm(model, trainer.cfg.grad_clip)
        optimizer.step()
        losses.append(float(loss.detach()))
        clip_fractions.append(stub._metrics["train"]["clip_ratio/region_mean"][-1])
    return model, losses, clip_fractions


PARITY_CASES = {
    # ours: (loss, clip low, clip high, loss_agg) <- TRL: (loss_type, importance_sampling_level)
    "ppo_clip_token_mean": (("ppo_clip", 0.2, 0.2, "token_mean"), ("bnpo", "token")),
    "gspo_seq_mean_token_mean": (("gspo", 3e-4, 4e-4, "seq_mean_token_mean"), ("grpo", "sequence")),
}
# How close the weights come after 4 Adam steps at lr 1e-2 (each step moves an element by up to
# lr). With the reference's storage aligned and its clip in DeepSpeed's rounding, ppo_clip is
# bit-identical (0 difference, also on 6 other random data sets). GSPO's per-token form of the
# sequence ratio rounds differently from TRL's (same math), and Adam turns a rounding-sized
# change of a near-zero gradient into an update of up to lr: over 7 data sets max |diff| up to
# 2e-4, mean |diff| up to 8e-8, at most 0.7% of the elements beyond 1e-6 (this data: 2.5e-5,
# 3e-9, 0.007%). A reference that retakes pi_old at each epoch (or step) lands 3e-2 (5e-2) away,
# with a mean |diff| of 4e-3 (1e-2) and over 96% of the elements beyond 1e-4.
EXACT_TOL = dict(rtol=1e-6, atol=1e-7)  # ppo_clip: every element
WEIGHT_ATOL = 1e-3  # GSPO: every element within a tenth of one lr step ...
WEIGHT_MEAN_ATOL = 1e-6  # ... the mean far below the controls' ...
WEIGHT_SHARE_OFF = 0.02  # ... and at most this share of the elements beyond 1e-6


def _weight_diffs(ours: torch.nn.Module, theirs: torch.nn.Module) -> torch.Tensor:
    """|ours - theirs| of every parameter element, flattened."""
    mine = dict(ours.named_parameters())
    other = dict(theirs.named_parameters())
    assert mine.keys() == other.keys()
    return torch.cat([(mine[name].detach() - p.detach()).abs().flatten() for name, p in other.items()])


def _assert_same_weights(ours: torch.nn.Module, theirs: torch.nn.Module, exact: bool) -> None:
    if exact:
        mine = dict(ours.named_parameters())
        for name, param in theirs.named_parameters():
            assert_close(mine[name].detach(), param.detach(), **EXACT_TOL, msg=lambda m, name=name: f"{name}: {m}")
    diffs = _weight_diffs(ours, theirs)
    assert float(diffs.max()) <= WEIGHT_ATOL, f"max |diff| {float(diffs.max()):.3g}"
    assert float(diffs.mean()) <= WEIGHT_MEAN_ATOL, f"mean |diff| {float(diffs.mean()):.3g}"
    assert float((diffs > 1e-6).float().mean()) <= WEIGHT_SHARE_OFF


@pytest.mark.parametrize("case", list(PARITY_CASES))
def test_two_epochs_of_two_mini_batches_match_trl_num_iterations(tiny_model_dir, single_rank_env, case):
    (loss, eps_low, eps_high, loss_agg), (trl_loss_type, trl_level) = PARITY_CASES[case]
    algo = AlgoConfig(
        ppo_epochs=2, mini_batches=2,
        policy=PolicyLossConfig(loss=loss, clip_eps_low=eps_low, clip_eps_high=eps_high, loss_agg=loss_agg),
        is_correction=ISCorrectionConfig(level="none"),
    )
    # A fresh rank: TRL's run starts with fresh Adam moments, and so must ours.
    role = _new_trainer(tiny_model_dir, algo)
    plan = _plan(_trajectories(), parts=2, epochs=2, loss_agg=loss_agg)
    assert [len(mb) for mb in plan.mini_batches] == [4, 4]
    # one micro-batch per mini-batch: TRL's per-step normaliser is then the mini-batch's
    assert all(len(prompt_groups(mb.trajectories, role.cfg.micro_batch_size)) == 1 for mb in plan.mini_batches)
    assert role.optimizer.param_groups[0]["lr"] == LR

    args = (role, tiny_model_dir, plan, trl_loss_type, trl_level, eps_low, eps_high)
    reference, trl_losses, trl_clip = _trl_reference_run(*args)
    control = _trl_reference_run(*args, retake_old="epoch")[0]
    metrics = role.train_step(plan)

    _assert_same_weights(role.engine.module, reference, exact=loss == "ppo_clip")
    off = _weight_diffs(role.engine.module, control)  # the tolerance tells a pi_old retaken per epoch apart
    assert float(off.max()) > 10 * WEIGHT_ATOL and float(off.mean()) > 1000 * WEIGHT_MEAN_ATOL
    assert float((off > 1e-6).float().mean()) > 0.9

    assert metrics["train/optimizer_steps"] == 4 and metrics["train/epochs"] == 2
    # each epoch's loss and clip fraction: the mean of its two optimizer steps', as TRL computed them
    for epoch in range(2):
        assert metrics[f"train/epoch{epoch}/loss"] == pytest.approx(sum(trl_losses[2 * epoch : 2 * epoch + 2]) / 2, rel=1e-5, abs=1e-7)
        assert metrics[f"train/epoch{epoch}/clip_fraction"] == pytest.approx(sum(trl_clip[2 * epoch : 2 * epoch + 2]) / 2, abs=1e-7)
    assert metrics["train/epoch0/ratio_max"] >= 1.0
    assert abs(metrics["train/epoch1/ratio_mean"] - 1.0) > 1e-6 and metrics["train/epoch1/ratio_max"] > 1.0
    assert metrics["train/clip_fraction"] > 0 and metrics["train/epoch1/clip_fraction"] > 0
    assert metrics["train/approx_kl"] > 0


# ---------------------------------------------------------------------------------------------
# vLLM-style importance-sampling correction: importance_weights vs TRL's block
# ---------------------------------------------------------------------------------------------


def _trl_vllm_is_ratio(old, sampling, mask, mode, clip_min, clip_max):
    """TRL 1.16's `vllm_importance_sampling_ratio`, reproduced line for line from
    trl/trainer/grpo_trainer.py lines 2660-2707 (inside `_generate_and_score_completions`,
    after the old-logps forward, so it cannot be called alone). Shape [B, T] for token_*
    modes, [B, 1] for sequence_* modes."""
    per_token_logps_diff = (old - sampling) * mask
    per_token_logps_diff = torch.nan_to_num(per_token_logps_diff, nan=0.0)
    sequence_level_is = mode in ["sequence_mask", "sequence_truncate"]
    if sequence_level_is:
        logps_diff = per_token_logps_diff.sum(dim=-1, keepdim=True)
    else:
        logps_diff = per_token_logps_diff
    ratio = torch.exp(logps_diff)
    if mode in ["sequence_truncate", "token_truncate"]:
        ratio = torch.clamp(ratio, min=clip_min, max=clip_max)
    elif mode in ["sequence_mask", "token_mask"]:
        min_val = clip_min if clip_min is not None else -math.inf
        max_val = clip_max if clip_max is not None else math.inf
        invalid = (ratio < min_val) | (ratio > max_val)
        ratio = ratio.masked_fill(invalid, value=0.0)
    else:
        raise ValueError(mode)
    return ratio


IS_CASES = {
    # TRL mode -> (our level, our mode); TRL truncate clamps below at clip_min too: None there
    "token_truncate": ("token", "truncate"),
    "token_mask": ("token", "mask"),
    "sequence_truncate": ("sequence", "truncate"),
    "sequence_mask": ("sequence", "mask"),
}


@pytest.mark.parametrize("trl_mode", list(IS_CASES))
def test_importance_weights_match_trl_vllm_correction(trl_mode):
    level, mode = IS_CASES[trl_mode]
    g = torch.Generator().manual_seed(7)
    lengths = torch.tensor([6, 3, 1, 5, 6, 4, 2, 6])
    batch, width = len(lengths), 6
    mask = (torch.arange(width).unsqueeze(0) < lengths.unsqueeze(1)).float()
    old = -3.0 * torch.rand(batch, width, generator=g, dtype=torch.float64)
    # per-sequence offsets spread the sequence ratios over both sides of the band
    offsets = torch.linspace(-0.5, 0.5, batch, dtype=torch.float64).unsqueeze(1)
    sampling = old - offsets / lengths.unsqueeze(1) - 0.4 * torch.randn(batch, width, generator=g, dtype=torch.float64)
    sampling = torch.where(mask > 0, sampling, 0.0)
    cap, floor = 1.5, 0.6
    clip_min = floor if mode == "mask" else None

    theirs = _trl_vllm_is_ratio(old, sampling, mask, trl_mode, clip_min, cap) * mask  # the loss sees it on valid tokens
    ours = importance_weights(old, sampling, mask, level, mode, cap, floor if mode == "mask" else None)

    assert_close(ours.weights, theirs.expand_as(mask), rtol=1e-12, atol=1e-12)
    # both regimes occur: some units corrected (capped or dropped), some kept as they are
    raw = _trl_vllm_is_ratio(old, sampling, mask, trl_mode.split("_")[0] + "_truncate", None, math.inf).expand_as(mask)
    valid = mask > 0
    changed = (ours.weights != raw) & valid
    assert changed.any() and (~changed & valid).any()
    if mode == "mask":
        assert (raw[valid] < floor).any() and (raw[valid] > cap).any()


# ---------------------------------------------------------------------------------------------
# By hand, on the shared trainer
# ---------------------------------------------------------------------------------------------


def test_old_logprobs_are_the_weights_before_the_step(trainer):
    trainer.algo = AlgoConfig(ppo_epochs=2, mini_batches=2)
    trajectories = _trajectories()
    for t in trajectories:  # stale values from an earlier step must not be used
        t.old_logprobs = [0.0] * t.response_length
    expected = _logprobs(trainer.engine.module, trajectories, trainer.pad_id)
    metrics = trainer.train_step(_plan(trajectories, parts=2, epochs=2))
    assert metrics["train/optimizer_steps"] == 4
    for row, t in enumerate(trajectories):
        assert_close(torch.tensor(t.old_logprobs), expected[row, : t.response_length], rtol=0, atol=1e-5)
    after = _logprobs(trainer.engine.module, trajectories, trainer.pad_id)
    assert (after - expected).abs().max() > 1e-3  # the weights did move: pi_old is not the final policy


def test_single_pass_ratio_is_exactly_one(trainer):
    trainer.algo = AlgoConfig()
    metrics = trainer.train_step(_plan(_trajectories(), parts=1, epochs=1))
    assert metrics["train/optimizer_steps"] == 1 and metrics["train/epochs"] == 1
    assert metrics["train/ratio_max"] == 1.0 and metrics["train/ratio_mean"] == 1.0
    assert metrics["train/clip_fraction"] == 0.0 and metrics["train/approx_kl"] == 0.0


def test_target_kl_stops_after_the_first_epoch(trainer):
    trainer.algo = AlgoConfig(ppo_epochs=3, mini_batches=2, target_kl=1e-9)
    plan = _plan(_trajectories(), parts=2, epochs=3)
    metrics = trainer.train_step(plan)
    assert metrics["train/epoch0/approx_kl"] > 1e-9  # mini-batch 2 saw the weights of step 1
    assert metrics["train/epochs"] == 1 and metrics["train/optimizer_steps"] == len(plan.mini_batches)
    assert "train/epoch1/loss" not in metrics

    trainer.algo = AlgoConfig(ppo_epochs=3, mini_batches=2, target_kl=None)  # control: all three epochs run
    metrics = trainer.train_step(_plan(_trajectories(), parts=2, epochs=3))
    assert metrics["train/epochs"] == 3 and metrics["train/optimizer_steps"] == 6


def test_behaviour_old_logprobs_give_a_ratio_away_from_one_on_the_first_pass(trainer):
    trajectories = _trajectories()
    current = _logprobs(trainer.engine.module, trajectories, trainer.pad_id)
    for row, t in enumerate(trajectories):  # the engine's numbers, off the trainer's by a known shift
        t.behaviour_logprobs = (current[row, : t.response_length] - 0.3).tolist()
    trainer.algo = AlgoConfig(old_logprobs="behaviour")
    metrics = trainer.train_step(_plan(trajectories, parts=1, epochs=1))
    assert metrics["train/ratio_mean"] == pytest.approx(math.exp(0.3), rel=1e-4)
    assert metrics["train/ratio_max"] > 1.0

    trainer.algo = AlgoConfig()  # control: recompute takes the trainer's own log-probs
    assert trainer.train_step(_plan(trajectories, parts=1, epochs=1))["train/ratio_max"] == 1.0


def _k3(old: torch.Tensor, behaviour: torch.Tensor, mask: torch.Tensor) -> float:
    log_ratio = (old - behaviour) * mask
    return float(((log_ratio.exp() - 1 - log_ratio) * mask).sum() / mask.sum())


def test_mismatch_kl_counts_the_samples_of_the_trained_version_only(trainer):
    trainer.algo = AlgoConfig()
    trajectories = [t for t in _trajectories() if t.group_id == "g0"]  # one group: one micro-batch
    current = _logprobs(trainer.engine.module, trajectories, trainer.pad_id)
    width = current.shape[1]
    mask = _mask(trajectories, width).float()
    shift = torch.tensor([[0.05, -0.1, 0.2, 0.15, -0.05]])[:, :width] * torch.tensor([[1.0], [-2.0], [0.5], [1.5]])
    behaviour = (current + shift) * mask
    old_version = [False, True, False, True]  # samples 1 and 3 come from older weights
    for row, t in enumerate(trajectories):
        t.behaviour_logprobs = behaviour[row, : t.response_length].tolist()
        t.weight_version = VERSION - 1 if old_version[row] else VERSION
    plan = UpdatePlan([TrainBatch(trajectories, VERSION)], [float(mask.sum())], 1)
    metrics = trainer.train_step(plan)
    same = torch.tensor([not o for o in old_version])
    assert metrics["train/mismatch_kl"] == pytest.approx(_k3(current[same], behaviour[same], mask[same]), rel=1e-4)
    # and the IS ratio statistics (token level, over every sample)
    ratio = torch.exp((current - behaviour) * mask)
    assert metrics["train/is_ratio_mean"] == pytest.approx(float((ratio * mask).sum() / mask.sum()), rel=1e-4)
    assert metrics["train/is_ratio_max"] == pytest.approx(float(ratio[mask > 0].max()), rel=1e-4)

    # every sample from an older version: no mismatch metric at all
    current = _logprobs(trainer.engine.module, trajectories, trainer.pad_id)
    for row, t in enumerate(trajectories):
        t.weight_version = VERSION - 1
        t.behaviour_logprobs = (current[row, : t.response_length] + 0.1).tolist()
    metrics = trainer.train_step(UpdatePlan([TrainBatch(trajectories, VERSION)], [float(mask.sum())], 1))
    assert "train/mismatch_kl" not in metrics
    assert "train/is_ratio_mean" in metrics  # the correction itself still runs


def test_a_batch_with_fewer_groups_than_mini_batches_makes_no_empty_step():
    """An empty mini-batch would still move the weights (Adam's momentum with a zero
    gradient): the split leaves the empty ones last and the plan drops them."""
    from rlhf_platform.recipes.online_rl import update_plan
    from support import small_cfg

    groups = [Trajectory("p", f"g{i}", [5, 6], [7] * (i + 1), [-1.0] * (i + 1), 0, "stop") for i in range(3)]
    assert [len(m) for m in TrainBatch(groups, 0).split(4)] == [1, 1, 1, 0]
    assert [len(m) for m in TrainBatch(groups, 0).split(2)] == [2, 1]
    plan = update_plan(small_cfg("algo.mini_batches=4", "algo.ppo_epochs=2"), TrainBatch(groups, 0))
    assert [len(m) for m in plan.mini_batches] == [1, 1, 1] and plan.epochs == 2
    assert plan.denominators == [1.0, 2.0, 3.0]  # token_mean: each mini-batch's own response tokens
