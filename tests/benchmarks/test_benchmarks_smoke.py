"""Each benchmark's CI-sized smoke mode runs and prints its figures, ratio last.
Not timed: the figures belong in BENCHMARKS.md, measured with the full commands."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from support import run_in_own_session

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("script", ["rollout_throughput", "weight_sync", "trainer_overhead", "overlap", "vs_trl", "async_modes"])
def test_benchmark_smoke_mode_prints_its_ratio_last(script, tmp_path):
    cmd = [sys.executable, str(ROOT / "benchmarks" / f"{script}.py"), "--smoke"]
    code, out, err = run_in_own_session(cmd, tmp_path / f"{script}.log", timeout_s=600)
    assert code == 0, err[-3000:]
    lines = out.strip().splitlines()
    assert lines[-1].startswith("RATIO ") and "x (target " in lines[-1], out[-2000:]
    assert len(lines) >= 3  # the figures behind the ratio
