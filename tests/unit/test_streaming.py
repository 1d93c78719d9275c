"""Streaming's pieces on their own: admission (backpressure), the buffer, per-token
versions, and the freshness rule measured by a sample's oldest token."""
from __future__ import annotations

import torch

from rlhf_platform.batching import collate_group
from rlhf_platform.freshness import split_by_freshness
from rlhf_platform.streaming import GroupBuffer, can_admit, sample_seed
from rlhf_platform.types import Trajectory


def traj(versions: list[int], group: str = "g", reward: float = 1.0) -> Trajectory:
    n = len(versions)
    return Trajectory(
        prompt_id="p", group_id=group, prompt_token_ids=[1, 2], response_token_ids=list(range(3, 3 + n)),
        behaviour_logprobs=[-1.0] * n, weight_version=min(versions), finish_reason="stop", reward=reward,
        token_versions=versions if len(set(versions)) > 1 else None,
    )


def test_admission_bounds_groups_by_version_and_by_capacity():
    # max_lag 1, 4 groups a step: the first 8 groups may sample from version 0 ...
    assert [can_admit(k, 100, 0, 0, 1, 4) for k in range(8)] == [0] * 8
    # ... the 9th would be trained at version 2, so needs version 1 published
    assert can_admit(8, 100, 0, 0, 1, 4) is None
    # once step 1 trained (4 groups left outstanding) the next may sample from version 1
    assert can_admit(4, 100, 1, 1, 1, 4) == 1 and can_admit(8, 100, 1, 1, 1, 4) is None
    # a trained but unpublished version does not count (sync_every > 1)
    assert can_admit(4, 100, 1, 0, 1, 4) is None
    assert can_admit(3, 3, 0, 0, 5, 4) is None  # the buffer bound
    assert can_admit(0, 4, 0, 0, 0, 4) == 0 and can_admit(4, 100, 0, 0, 0, 4) is None  # synchronous


def test_buffer_hands_out_groups_in_the_order_they_finished():
    buffer = GroupBuffer()
    for name in "abc":
        buffer.put([traj([0], name)])
    assert [g[0].group_id for g in buffer.take(2)] == ["a", "b"] and len(buffer) == 1
    assert [g[0].group_id for g in buffer.take(5)] == ["c"]


def test_version_spans_mark_where_updates_cut_a_reply():
    t = traj([3, 3, 4, 4, 4, 6])
    assert t.weight_version == 3
    assert t.version_spans() == [(3, 0, 2), (4, 2, 5), (6, 5, 6)]
    assert traj([2, 2]).version_spans() == [(2, 0, 2)] and traj([2, 2]).versions_of_tokens() == [2, 2]


def test_staleness_is_that_of_the_oldest_token():
    spanning, fresh_one = traj([3, 3, 5, 5]), traj([4, 4])
    # trained at 5 with max_lag 1: versions >= 4 are fresh; the spanning reply's oldest token is 3
    kept, stale = split_by_freshness([spanning, fresh_one], current_version=5, max_lag=1)
    assert kept == [fresh_one] and stale == [spanning]


def test_mask_keeps_the_fresh_tokens_and_masks_the_stale_prefix():
    spanning, all_old = traj([3, 3, 5, 5, 5]), traj([2, 3])
    kept, stale = split_by_freshness([spanning, all_old], current_version=5, max_lag=1, stale_tokens="mask")
    assert kept == [spanning] and stale == [all_old]
    assert spanning.masked_prefix == 2 and spanning.trained_length == 3
    batch = collate_group([spanning, traj([5, 5, 5])], pad_token_id=0)
    assert batch.trained_mask.tolist() == [[0, 0, 1, 1, 1], [1, 1, 1, 0, 0]]
    assert batch.response_mask.tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]  # the model still reads them
    # judged again later (fresher trainer): the mask is recomputed, not accumulated
    split_by_freshness([spanning], current_version=4, max_lag=1, stale_tokens="mask")
    assert spanning.masked_prefix == 0 and collate_group([spanning], 0).loss_mask is None


def test_update_plan_normalises_by_the_trained_tokens():
    from support import small_cfg

    from rlhf_platform.recipes.online_rl import update_plan
    from rlhf_platform.types import TrainBatch

    cfg = small_cfg("algo.policy.loss_agg=token_mean", "algo.mini_batches=1")
    a, b = traj([3, 3, 5, 5], "a"), traj([5, 5], "b")
    a.masked_prefix = 2
    assert update_plan(cfg, TrainBatch([a, b], version=5)).denominators == [4.0]


def test_each_reply_submission_has_its_own_reproducible_seed():
    seeds = {sample_seed(7, sample, segment) for sample in range(4) for segment in range(3)}
    assert len(seeds) == 12 and sample_seed(7, 1, 2) == sample_seed(7, 1, 2) and sample_seed(None, 0, 0) is None
    assert all(0 <= s < 2**31 - 1 for s in seeds)


def test_token_advantages_are_whitened_over_the_trained_tokens_only():
    from rlhf_platform.config import AdvantageConfig, AlgoConfig
    from rlhf_platform.roles.advantage_builder import token_advantages

    a, b = traj([3, 3, 5, 5], "a", reward=1.0), traj([5, 5, 5, 5], "b", reward=0.0)
    a.masked_prefix = 2
    algo = AlgoConfig(advantage=AdvantageConfig(estimator="reinforce_pp"))
    advantages, _, _ = token_advantages(algo, torch.tensor([1.0, 0.0]), [a, b], 0.0)
    trained = collate_group([a, b], 0).trained_mask
    assert abs(float((advantages * trained).sum())) < 1e-5  # zero mean over what the loss counts
    assert advantages[0, :2].abs().max() == 0  # the masked prefix carries no advantage
