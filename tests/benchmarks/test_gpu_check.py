"""The prepared GPU check's dry run: the same checks on the CPU with the tiny model, so
the script a device session runs is kept working by CI (it exits non-zero on failure)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from support import run_in_own_session

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.e2e


def test_gpu_check_dry_run_passes_every_check(tmp_path):
    code, out, err = run_in_own_session([sys.executable, str(ROOT / "scripts" / "gpu_check.py"), "--dry-run"], tmp_path / "gpu_check", 600)
    assert code == 0, (out + err)[-4000:]
    for check in ("grpo", "ipc", "throughput"):
        assert f"CHECK {check}: ok" in out, out[-3000:]
    assert "devices: {'trainer': 'cpu', 'engine': 'cpu', 'reference': 'cpu'}" in out
    assert out.strip().splitlines()[-1] == "gpu_check: all passed"
