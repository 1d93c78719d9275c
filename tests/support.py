"""Helpers shared by the tests (importable as `support`: pytest puts tests/ on the path)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from rlhf_platform.commands.train import CONF_DIR
from rlhf_platform.config import to_config


def run_in_own_session(cmd: list[str], log_prefix: str | os.PathLike, timeout_s: float) -> tuple[int, str, str]:
    """Run `cmd` in its own process group with output in files, so neither a hang nor
    Ray's daemons (which inherit the descriptors) can block the test: on timeout the
    whole group is killed and the test fails with the output so far."""
    out_path, err_path = f"{log_prefix}.out", f"{log_prefix}.err"
    with open(out_path, "w") as out, open(err_path, "w") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, text=True, start_new_session=True)
        try:
            returncode = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            returncode = -signal.SIGKILL
    stdout, stderr = open(out_path).read(), open(err_path).read()
    if returncode == -signal.SIGKILL:
        pytest.fail(f"{cmd} did not finish in {timeout_s}s; stderr tail:\n{stderr[-3000:]}")
    return returncode, stdout, stderr


# The tiny model and a small task: a CLI run in about a minute.
SMALL = [
    "model=tiny",
    "rollout.prompts_per_step=4",
    "rollout.samples_per_prompt=4",
    "rollout.max_new_tokens=8",
    "eval.max_new_tokens=8",
    "task.train_size=50",
    "task.eval_size=10",
    "trainer.micro_batch_size=8",
    "trainer.lr=1e-3",
    "logger.backend=none",
    "logger.progress=false",
    "ray.include_dashboard=false",
]


def run_cli(tmp_path, name: str, *overrides: str) -> tuple[dict, list[dict]]:
    cmd = [
        sys.executable, "-c", "from rlhf_platform.commands.train import train_main; train_main()",
        *SMALL, *overrides, f"run.root={tmp_path}", f"run.name={name}",
    ]
    returncode, stdout, stderr = run_in_own_session(cmd, tmp_path / f"{name}.log", timeout_s=900)
    assert returncode == 0, stderr[-3000:]
    assert "held-out accuracy" in stdout  # the printed summary
    summary = json.loads((tmp_path / name / "summary.json").read_text())
    metrics = [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
    return summary, [m for m in metrics if "train/loss" in m]


def rlhf(tmp_path, *args: str, timeout_s: float = 120) -> tuple[int, str, str]:
    """The `rlhf` command, as a user runs it."""
    cmd = [sys.executable, "-c", "import sys; from rlhf_platform.commands.rlhf import main; sys.exit(main())", *args]
    return run_in_own_session(cmd, tmp_path / "rlhf", timeout_s=timeout_s)


def compose_cfg(*overrides):
    """The Hydra config the CLI would compose from `overrides` (not yet typed or validated)."""
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("config", overrides=list(overrides))


def small_cfg(*overrides):
    return to_config(compose_cfg(*SMALL, *overrides))


def wandb_offline_records(path: Path) -> list:
    """The protobuf records of a wandb offline run file (`run-*.wandb`): wandb's
    LevelDB-style log (7-byte file header, 32 KiB blocks, records of one or more
    chunks, each with a 7-byte header: crc32, little-endian length, chunk type)."""
    from wandb.proto import wandb_internal_pb2

    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a wandb run file"
    records, pending, pos, block = [], b"", 7, 32768
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        length, kind = int.from_bytes(data[pos + 4 : pos + 6], "little"), data[pos + 6]
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        pending = chunk if kind in (1, 2) else pending + chunk  # 1 full, 2 first, 3 middle, 4 last
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
    return records


def wandb_offline_history(run_dir: Path) -> tuple[list[dict], dict]:
    """(logged rows with their step, the run's config) of the one wandb offline run under
    `run_dir`, as `wandb sync` would upload them."""
    (path,) = Path(run_dir).glob("wandb/offline-run-*/run-*.wandb")
    rows, config = [], {}
    for record in wandb_offline_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "history":
            rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item})
        elif kind in ("run", "config"):  # the config comes with the run record, changes as config records
            updates = record.run.config.update if kind == "run" else record.config.update
            config.update({item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in updates})
    return rows, config


def sandbox_processes() -> list[str]:
    """Command lines of every sandbox launcher and harness on the machine."""
    import psutil

    lines = []
    for process in psutil.process_iter(["cmdline"]):
        line = " ".join(process.info["cmdline"] or [])
        if "sandbox_launcher.py" in line or "/.sandbox/sandbox_harness.py" in line:
            lines.append(line)
    return lines


def chat_dataset(root: Path) -> dict[str, Path]:
    """A chat-format task (system prompt, a user turn) and two eval sets in other formats."""
    import pandas as pd

    def row(a: int, b: int, level: int) -> dict:
        return {
            "messages": [{"role": "system", "content": "You add numbers."}, {"role": "user", "content": f"What is {a} + {b}?"}],
            "answer": str(a + b), "difficulty": level,
        }

    root.mkdir(parents=True, exist_ok=True)
    train = root / "train.jsonl"
    train.write_text("".join(json.dumps(row(a, a + 1, a % 2)) + "\n" for a in range(20)))
    small = root / "small.jsonl"
    small.write_text("".join(json.dumps(row(a, 2, a % 2)) + "\n" for a in range(30, 34)))
    wide = root / "wide.parquet"
    pd.DataFrame([{"question": f"What is {a} + 10?", "answer": str(a + 10)} for a in range(40, 43)]).to_parquet(wide)
    return {"train": train, "small": small, "wide": wide}
