"""Evaluation as users expect it: several eval sets reported by name and level, greedy
accuracy and sampled pass@n / mean@n, in metrics, summary.json, the registry and the gate."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlhf_platform.config import ConfigError
from rlhf_platform.evaluation import EvalResult, pass_at_k, score_samples
from rlhf_platform.types import Trajectory
from support import chat_dataset, compose_cfg, small_cfg

INPROCESS = ["executor=inprocess", "rollout.backend=hf", "eval.max_new_tokens=4", "rollout.max_new_tokens=6"]


@pytest.mark.parametrize(
    "n,correct,k,expected",
    [(4, 0, 4, 0.0), (4, 1, 4, 1.0), (4, 4, 1, 1.0), (4, 1, 1, 0.25), (4, 2, 2, 1 - 1 / 6), (10, 3, 5, 1 - 21 / 252)],
)
def test_pass_at_k_by_hand(n, correct, k, expected):
    # 1 - C(n-c, k) / C(n, k): e.g. n=4, c=2, k=2: 1 - C(2,2)/C(4,2) = 1 - 1/6
    assert pass_at_k(n, correct, k) == pytest.approx(expected)


@pytest.mark.parametrize("n,correct,k,expected", [(10, 1, 1, 0.1), (10, 3, 1, 0.3), (3, 1, 1, 1 / 3), (7, 2, 3, 25 / 35)])
def test_pass_at_k_is_exact(n, correct, k, expected):
    """Hostile-review minor finding: pass_at_k(10, 1, 1) was 0.09999999999999998 (1 - 9/10 in floats)."""
    assert pass_at_k(n, correct, k) == expected


def test_pass_at_k_refuses_what_it_cannot_estimate():
    with pytest.raises(ValueError, match="pass@5"):
        pass_at_k(4, 1, 5)


def reply(prompt: str, group: str, text: str, gold: str, level: int = 0) -> Trajectory:
    return Trajectory(prompt, group, [1], [2], [], 0, "stop", response_text=text, answer=gold, difficulty=level)


def test_pass_and_mean_at_n_by_prompt_and_level():
    check = lambda t: t.response_text == t.answer  # noqa: E731
    replies = [
        *(reply("a", "a#0", text, "7") for text in ("7", "1", "2", "3")),  # 1 of 4 right
        *(reply("b", "b#0", text, "5") for text in ("1", "2", "3", "4")),  # none
        *(reply("c", "c#0", text, "9", level=1) for text in ("9", "9", "9", "0")),  # 3 of 4
    ]
    scores = score_samples(replies, 4, check)
    assert scores.pass_at_n == pytest.approx(2 / 3) and scores.mean_at_n == pytest.approx((0.25 + 0 + 0.75) / 3)
    assert scores.pass_by_level == {0: 0.5, 1: 1.0} and scores.mean_by_level == {0: 0.125, 1: 0.75}
    result = EvalResult(3, 0.5, 3, {0: 0.5, 1: 1.0}, name="gsm", samples=scores)
    assert result.metric("pass@4") == pytest.approx(2 / 3) and result.figures()["mean@4/level1"] == 0.75
    with pytest.raises(KeyError, match="'pass@8'"):
        result.metric("pass@8")
    with pytest.raises(ValueError, match="expected eval.samples_per_prompt=4"):
        score_samples(replies[:3], 4, check)


@pytest.mark.parametrize(
    "overrides,key",
    [
        (["gate.eval_set=gsm"], "gate.eval_set"),
        (["gate.metric=pass@4"], "gate.metric"),
        (["eval.samples_per_prompt=4", "gate.metric=pass@8"], "gate.metric"),
        (["eval.sets=[{name:held_out,path:x.jsonl}]"], r"eval.sets\[0\].name"),
        (["eval.sets=[{name:'a b',path:x.jsonl}]"], r"eval.sets\[0\].name"),
        (["eval.sets=[{name:a}]"], r"eval.sets\[0\].path"),
        (["eval.samples_per_prompt=0"], "eval.samples_per_prompt"),
        (["eval.temperature=0"], "eval.temperature"),
    ],
)
def test_eval_and_gate_keys_are_checked(overrides, key):
    from rlhf_platform.config import to_config

    with pytest.raises(ConfigError, match=key):
        to_config(compose_cfg(*overrides))


def test_a_chat_run_reports_every_eval_set_with_pass_at_n(tmp_path):
    """In process: a chat-format dataset, two eval sets (jsonl with levels, parquet with
    plain prompts) and 4 samples per prompt: every set's greedy accuracy, pass@4 and
    mean@4 (and by level) reach metrics.jsonl, summary.json and the registry; the gate
    judges the set and metric it names."""
    from rlhf_platform.recipes.run import run
    from rlhf_platform.registry import SQLiteRegistry, recorded_run_id

    files = chat_dataset(tmp_path / "data")
    sets = f"eval.sets=[{{name:small,path:'{files['small']}'}},{{name:wide,path:'{files['wide']}',prompt_field:question}}]"
    cfg = small_cfg(
        *INPROCESS, "task=dataset", f"task.train_path={files['train']}", "task.prompt_field=messages", sets,
        "eval.samples_per_prompt=4", "eval.temperature=1.0", "trainer.max_steps=2", "gate.every=2",
        "gate.eval_set=small", "gate.metric=pass@4", f"run.root={tmp_path}", "run.name=chat",
    )
    summary = run(cfg, tmp_path / "chat")

    for when in ("eval_sets_before", "eval_sets_after"):
        assert set(summary[when]) == {"small", "wide"}  # the dataset has no held-out split of its own
        small, wide = summary[when]["small"], summary[when]["wide"]
        assert small["num_prompts"] == 4 and wide["num_prompts"] == 3
        for figures in (small, wide):
            assert {"accuracy", "pass@4", "mean@4"} <= figures.keys()
            assert 0.0 <= figures["mean@4"] <= figures["pass@4"] <= 1.0
        assert {"accuracy/level0", "accuracy/level1", "pass@4/level1"} <= small.keys()
    assert summary["eval_accuracy_after"] == summary["eval_sets_after"]["small"]["accuracy"]  # the gate's set
    metrics = [json.loads(line) for line in (tmp_path / "chat" / "metrics.jsonl").read_text().splitlines()]
    logged = {key for m in metrics for key in m}
    assert {"eval/small/pass@4", "eval/wide/mean@4", "eval/small/accuracy/level1", "eval/accuracy"} <= logged
    registry = SQLiteRegistry(tmp_path / "chat")
    versions = registry.versions(recorded_run_id(tmp_path / "chat"))
    gated = [v for v in versions if v.step == 2][0].eval
    assert gated["accuracy"] == summary["eval_sets_after"]["small"]["pass@4"]  # gate.metric of gate.eval_set
    assert set(gated["sets"]) == {"small", "wide"}


def test_a_missing_eval_set_names_its_key(tmp_path):
    from rlhf_platform.data import DataError
    from rlhf_platform.recipes.run import prepare_inputs

    cfg = small_cfg(*INPROCESS, f"eval.sets=[{{name:gone,path:'{tmp_path}/gone.jsonl'}}]")
    with pytest.raises(DataError, match="gone.jsonl"):
        prepare_inputs(cfg, tmp_path / "run")


def test_answers_without_a_check_do_not_make_accuracy_undefined_and_an_undefined_one_fails_the_gate():
    """A mixture dataset scored only by a shaping reward has no check: its answers are left
    out of accuracy (they used to make it NaN, and a NaN accuracy passed every gate)."""
    from rlhf_platform.config import GateConfig
    from rlhf_platform.evaluation import score_answers
    from rlhf_platform.gate import GateMetrics, gate_failures

    check = lambda t: float("nan") if t.dataset == "chat" else t.response_text == t.answer  # noqa: E731
    answers = [reply("a", "a#0", "7", "7"), reply("b", "b#0", "1", "2"), reply("c", "c#0", "x", "y", level=1)]
    answers[2].dataset = "chat"
    result = score_answers(answers, 1, check)
    assert result.accuracy == 0.5 and result.accuracy_by_level[0] == 0.5 and result.num_prompts == 3
    assert result.accuracy_by_level[1] != result.accuracy_by_level[1]  # only unchecked answers: undefined
    failures = gate_failures(GateMetrics(float("nan"), 3.0), GateMetrics(0.4, 3.0), GateConfig())
    assert failures and "not defined" in failures[0]
    assert gate_failures(GateMetrics(float("nan"), 3.0), GateMetrics(float("nan"), 3.0), GateConfig()) == []


def test_an_eval_set_is_kept_apart_from_training_by_file_identity_and_by_prompt(tmp_path):
    """Hostile-review finding D4, for eval.sets: prepare_inputs checks each set with check_apart,
    which compared path strings only; an eval set through a symlink, or repeating training
    prompts from another file, was trained on."""
    import os

    from rlhf_platform.data import DataError, check_apart, load_eval_rows, load_rows

    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps({"prompt": f"q{i}", "answer": str(i)}) + "\n" for i in range(3)))
    os.symlink(train, tmp_path / "link.jsonl")
    (tmp_path / "copy.jsonl").write_text(json.dumps({"prompt": "q1", "answer": "1"}) + "\n" + json.dumps({"prompt": "q7", "answer": "7"}) + "\n")
    train_rows = load_rows(train, "prompt", "answer")
    link = load_eval_rows(str(tmp_path / "link.jsonl"), None, None, "prompt", "answer", key="eval.sets[0].path")
    with pytest.raises(DataError, match=r"eval.sets\[0\]: held-out rows come from .*link.jsonl \(which is .*train.jsonl\)"):
        check_apart(train_rows, link, "eval.sets[0]")
    copy = load_eval_rows(str(tmp_path / "copy.jsonl"), None, None, "prompt", "answer", key="eval.sets[1].path")
    with pytest.raises(DataError, match=r"eval.sets\[1\]: 1 held-out prompt\(s\) .* are training prompts too"):
        check_apart(train_rows, copy, "eval.sets[1]")
    check_apart(train_rows, copy, "eval.sets[1]", on_bad_row="skip")
    assert [r.prompt for r in copy.rows] == ["q7"] and copy.skipped == 1
