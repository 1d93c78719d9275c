"""Bad input through `rlhf-train`: malformed rows are named (file and row) before any
actor starts, or skipped and counted; a tampered checkpoint is refused by name.

Runs that get past the input go through the in-process executor: what is checked here
is the input path, the same under either executor (Ray's own e2e tests are apart)."""
from __future__ import annotations

import json
import sys

import pytest

from support import SMALL, run_cli, run_in_own_session

pytestmark = pytest.mark.e2e

IN_PROCESS = ["executor=inprocess", "rollout.backend=hf"]
GOOD = [{"prompt": f"What is {i} + 1? Reply with only the number.", "answer": str(i + 1)} for i in range(24)]
BAD = [
    b'{"prompt": "no answer here"}',  # missing field
    b'{"prompt": 7, "answer": "7"}',  # wrong type
    b'{"prompt": "", "answer": "1"}',  # empty prompt
    json.dumps({"prompt": "word " * 600, "answer": "1"}).encode(),  # longer than the model's limit
    b'{"prompt": "\xff\xfe", "answer": "1"}',  # invalid UTF-8
]


def _dataset(tmp_path):
    path = tmp_path / "train.jsonl"
    rows = [json.dumps(r).encode() for r in GOOD[:12]] + BAD + [json.dumps(r).encode() for r in GOOD[12:]]
    path.write_bytes(b"\n".join(rows) + b"\n")
    return path


def _cli(tmp_path, name, *overrides):
    cmd = [sys.executable, "-c", "from rlhf_platform.commands.train import train_main; train_main()", *SMALL,
           f"run.root={tmp_path}", f"run.name={name}", *overrides]
    return run_in_own_session(cmd, tmp_path / name, timeout_s=600)


def test_bad_rows_are_named_before_any_actor_starts(tmp_path):
    path = _dataset(tmp_path)
    code, _, err = _cli(tmp_path, "strict", "task=dataset", f"task.train_path={path}")
    assert code == 2 and f"error: {path}: row 13: missing field 'answer'" in err
    assert "Started a local Ray instance" not in err


def test_bad_rows_are_skipped_and_counted(tmp_path):
    path = _dataset(tmp_path)
    summary, _ = run_cli(
        tmp_path, "skip", "task=dataset", f"task.train_path={path}", "task.on_bad_row=skip",
        "trainer.max_steps=2", "eval.before=false", "eval.after=false", "rollout.max_staleness=0", *IN_PROCESS,
    )
    assert summary["skipped_rows"] == len(BAD) and summary["steps"] == 2
    ledger = json.loads((tmp_path / "skip" / "prompt_ledger.json").read_text())
    assert len(ledger) == 2 * 4 and len(set(ledger)) == len(ledger)


def test_tampered_checkpoint_is_refused_before_resuming(tmp_path):
    run_cli(tmp_path, "tamper", "trainer.max_steps=1", "checkpoint.every=1", "eval.before=false", "eval.after=false", *IN_PROCESS)
    [queue_file] = (tmp_path / "tamper" / "checkpoints").glob("*/prompt_queue.json")
    queue_file.write_text(queue_file.read_text().replace('"acked": 4', '"acked": 0'))
    code, _, err = _cli(tmp_path, "tamper", "trainer.max_steps=2", "checkpoint.every=1", "resume=latest")
    assert code == 2 and "prompt_queue.json was altered" in err
    assert "Started a local Ray instance" not in err
