"""Soak: a long asynchronous run on the tiny model holds bounded memory and queues.

The CI-sized run (40 steps) and the `slow` one (220 steps) compare the driver's RSS and
the object store after warm-up with the end of the run."""
from __future__ import annotations

import pytest

from support import run_cli

pytestmark = pytest.mark.e2e

STALENESS = 1
PROMPTS_PER_STEP = 4


def soak(tmp_path, steps: int, warm_step: int) -> dict[str, float]:
    summary, metrics = run_cli(
        tmp_path, "soak", f"trainer.max_steps={steps}", f"rollout.max_staleness={STALENESS}",
        "eval.before=false", "eval.after=false",
    )
    assert summary["steps"] == steps
    by_step = {m["step"]: m for m in metrics}
    warm, last = by_step[warm_step], by_step[steps]
    for m in metrics:  # the queues never exceed what the staleness bound allows
        assert m["queue/rollouts_in_flight"] <= STALENESS + 1
        assert m["queue/prompts_in_flight"] <= (STALENESS + 1) * PROMPTS_PER_STEP
    growth = {
        "driver_rss_mb_warm": warm["memory/driver_rss_mb"],
        "driver_rss_mb_last": last["memory/driver_rss_mb"],
        "object_store_mb_warm": warm["memory/object_store_mb"],
        "object_store_mb_last": last["memory/object_store_mb"],
        "object_store_mb_max_after_warm": max(m["memory/object_store_mb"] for m in metrics if m["step"] >= warm_step),
    }
    print(f"soak {steps} steps: {growth}")
    assert growth["driver_rss_mb_last"] - growth["driver_rss_mb_warm"] < 64, growth
    assert growth["object_store_mb_max_after_warm"] < growth["object_store_mb_warm"] + 64, growth
    return growth


def test_soak_ci_sized(tmp_path):
    soak(tmp_path, steps=40, warm_step=10)


@pytest.mark.slow
def test_soak_220_steps(tmp_path):
    soak(tmp_path, steps=220, warm_step=50)
