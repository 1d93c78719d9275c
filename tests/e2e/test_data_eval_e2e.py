"""Bring your own data, through real Ray, vLLM and DeepSpeed: a chat-format dataset
with a system prompt, two eval sets and sampled pass@4 in summary.json."""
from __future__ import annotations

import pytest

from support import chat_dataset, run_cli

pytestmark = pytest.mark.e2e


def test_a_chat_dataset_run_reports_two_eval_sets_with_pass_at_4(tmp_path):
    files = chat_dataset(tmp_path / "data")
    sets = f"eval.sets=[{{name:small,path:'{files['small']}'}},{{name:wide,path:'{files['wide']}',prompt_field:question}}]"
    summary, steps = run_cli(
        tmp_path, "chat", "task=dataset", f"task.train_path={files['train']}", "task.prompt_field=messages", sets,
        "eval.samples_per_prompt=4", "trainer.max_steps=2",
    )
    assert summary["steps"] == 2 and len(steps) == 2
    for when in ("eval_sets_before", "eval_sets_after"):
        assert set(summary[when]) == {"small", "wide"}
        for name, prompts in (("small", 4), ("wide", 3)):
            figures = summary[when][name]
            assert figures["num_prompts"] == prompts and 0.0 <= figures["mean@4"] <= figures["pass@4"] <= 1.0
        assert "pass@4/level1" in summary[when]["small"]
