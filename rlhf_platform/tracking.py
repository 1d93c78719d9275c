"""Metrics: always a metrics.jsonl in the run directory, plus wandb (offline by default)."""
from __future__ import annotations

import json
import os
import re
import uuid
from pathlib import Path
from typing import Any

_SECRET_NAME = re.compile(r"(_KEY|_TOKEN|SECRET|PASSWORD)$", re.IGNORECASE)


def scrub_secrets(value: Any) -> Any:
    """A copy of a nested config with values of secret-looking keys replaced."""
    if isinstance(value, dict):
        return {k: ("***" if _SECRET_NAME.search(str(k)) else scrub_secrets(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [scrub_secrets(v) for v in value]
    return value


def wandb_mode(configured: str, environ: dict[str, str] | None = None) -> str:
    """The wandb mode to run in. `auto` (the default) is online when an API key is
    configured (WANDB_API_KEY) and offline otherwise, so a run never needs an account;
    WANDB_MODE in the environment, as wandb documents, wins over both."""
    environ = os.environ if environ is None else environ
    if environ.get("WANDB_MODE"):
        return environ["WANDB_MODE"]
    if configured != "auto":
        return configured
    return "online" if environ.get("WANDB_API_KEY") else "offline"


def wandb_run_id(run_dir: Path) -> str:
    """The wandb run id of the run in `run_dir`: made once and kept in `wandb_id`, so a
    resumed run logs to the same wandb run instead of starting a new one."""
    path = run_dir / "wandb_id"
    if path.is_file():
        recorded = path.read_text().strip()
        if re.fullmatch(r"[a-z0-9]{8,32}", recorded):
            return recorded
    run_id = uuid.uuid4().hex[:16]
    run_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(run_id + "\n")
    return run_id


class MetricsLogger:
    def __init__(self, run_dir: Path, backend: str, project: str, mode: str, run_name: str, config: dict) -> None:
        self.path = Path(run_dir) / "metrics.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "a")
        self._wandb = None
        if backend == "wandb":
            import wandb

            os.environ.setdefault("WANDB_SILENT", "true")
            self._wandb = wandb.init(
                project=project,
                name=run_name,
                id=wandb_run_id(Path(run_dir)),
                resume="allow",  # a resumed run (same run directory) continues its wandb run
                dir=str(run_dir),
                mode=wandb_mode(mode),
                config=scrub_secrets(config),
                settings=wandb.Settings(console="off", x_disable_stats=True),
            )

    def log(self, metrics: dict[str, float], step: int) -> None:
        self._fh.write(json.dumps({"step": step, **metrics}) + "\n")
        self._fh.flush()
        if self._wandb is not None:
            self._wandb.log(metrics, step=step)

    def close(self) -> None:
        self._fh.close()
        if self._wandb is not None:
            self._wandb.finish()
