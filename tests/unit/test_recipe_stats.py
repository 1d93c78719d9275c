from rlhf_platform.recipes.stats import merge_rank_metrics


def test_loss_shares_add_up_and_other_metrics_average():
    merged = merge_rank_metrics([{"train/loss": 0.25, "train/grad_norm": 2.0}, {"train/loss": 0.5, "train/grad_norm": 4.0}])
    assert merged == {"train/loss": 0.75, "train/grad_norm": 3.0}
