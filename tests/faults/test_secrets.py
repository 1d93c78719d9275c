"""Secrets in the environment never reach a run's files: logged config, wandb's offline
run, metrics, the registry's rows, checkpoints."""
from __future__ import annotations

import pytest

from support import run_cli

pytestmark = pytest.mark.e2e

SECRETS = {"WANDB_API_KEY": "sekrit-wandb-0123456789", "HF_TOKEN": "sekrit-hf-token", "MY_SERVICE_KEY": "sekrit-service"}


def test_no_secret_is_written_to_the_run_directory(tmp_path, monkeypatch):
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    summary, _ = run_cli(
        tmp_path, "secret", "trainer.max_steps=1", "eval.before=false", "logger.backend=wandb", "checkpoint.every=1"
    )
    run_dir = tmp_path / "secret"
    files = [p for p in run_dir.rglob("*") if p.is_file()]
    assert any(p.name == "registry.sqlite" for p in files) and any("wandb" in p.parts for p in files)
    for path in files:
        data = path.read_bytes()
        for value in SECRETS.values():
            assert value.encode() not in data, f"{value} leaked into {path}"
