import json

import pytest

from rlhf_platform.report import overlap_fraction, write_report


def test_overlap_counts_training_time_covered_by_rollouts():
    train = [(10.0, 20.0), (30.0, 40.0)]
    assert overlap_fraction([(0.0, 10.0), (20.0, 30.0)], train) == 0.0  # strictly alternating
    assert overlap_fraction([(5.0, 25.0), (25.0, 45.0)], train) == 1.0  # rollouts hide every train step
    # two engines generating at once are counted once
    assert overlap_fraction([(12.0, 18.0), (14.0, 20.0)], train) == pytest.approx(8.0 / 20.0)
    assert overlap_fraction([], []) is None


def test_report_draws_what_the_metrics_hold(tmp_path):
    rows = [
        {"step": 0, "eval/accuracy": 0.2},
        *(
            {
                "step": s, "train/loss": 0.1, "train/kl_ref": 0.01 * s, "train/entropy": 2.0 - 0.1 * s,
                "rollout/reward_mean": 0.1 * s, "rollout/response_length_mean": 20.0, "rollout/staleness_mean": 0.5,
                "rollout/staleness_max": 1.0, "time/rollout_wait_seconds": 1.0, "time/train_seconds": 2.0,
                "timeline/rollout_start": 10.0 * s, "timeline/rollout_end": 10.0 * s + 6, "timeline/train_start": 10.0 * s + 4,
                "timeline/train_end": 10.0 * s + 8, "guard/rolled_back": float(s == 2),
                "train/clip_fraction": 0.02 * s, "train/clip_fraction_low": 0.01 * s, "train/clip_fraction_high": 0.01 * s,
                "train/mismatch_kl": 1e-3,
            }
            for s in (1, 2, 3)
        ),
        {"step": 3, "eval/accuracy": 0.5},
    ]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "summary.json").write_text(json.dumps({"recipe": "grpo", "eval_accuracy_before": 0.2, "eval_accuracy_after": 0.5,
                                                       "rollbacks": [{"step": 2, "reason": "gate failed"}]}))
    report = write_report(tmp_path)
    assert set(report.plots) == {
        "reward.png", "accuracy.png", "kl.png", "clip_fraction.png", "mismatch_kl.png", "entropy.png", "response_length.png",
        "staleness.png", "timeline.png",
    }
    assert all((tmp_path / "report" / p).read_bytes()[:4] == b"\x89PNG" for p in report.plots)
    assert report.overlap == pytest.approx(0.5)  # each train step [4, 8] after its rollout [0, 6]
    text = (tmp_path / "report" / "report.md").read_text()
    assert "20.0% before, 50.0% after" in text and "step 2: gate failed" in text and "50% of training time" in text


def test_report_names_a_directory_without_metrics(tmp_path):
    with pytest.raises(FileNotFoundError, match="metrics.jsonl"):
        write_report(tmp_path)


def test_a_run_killed_mid_write_is_reported_with_its_bad_lines_skipped_and_counted(tmp_path):
    rows = [{"step": 1, "rollout/reward_mean": 0.2}, {"step": 2, "rollout/reward_mean": "high"}, {"step": 3, "rollout/reward_mean": None}]
    lines = [json.dumps(r) for r in rows] + ['{"reward": 1}', "[1, 2]", '{"step": "4"}', '{"step": 5, "rollout/rew']
    (tmp_path / "metrics.jsonl").write_text("\n".join(lines))
    report = write_report(tmp_path)
    assert report.bad_lines == [4, 5, 6, 7] and "reward.png" in report.plots
    assert "Skipped 4 unreadable metrics.jsonl line(s)" in (report.directory / "report.md").read_text()


@pytest.mark.parametrize("summary", ['{"recipe": ', "[1]", '{"rollbacks": 5}'])
def test_an_unreadable_summary_is_an_error_naming_it(tmp_path, capsys, summary):
    from rlhf_platform.commands.rlhf import main

    (tmp_path / "metrics.jsonl").write_text(json.dumps({"step": 1, "rollout/reward_mean": 0.5}))
    (tmp_path / "summary.json").write_text(summary)
    assert main(["report", str(tmp_path)]) == 2
    _, err = capsys.readouterr()
    assert f"{tmp_path / 'summary.json'}:" in err and "Traceback" not in err
