"""Memory the driver holds, for the soak test and the dashboard (the executor reports
what it holds elsewhere, e.g. Ray's object store)."""
from __future__ import annotations

import os

import psutil


def driver_rss_mb() -> float:
    return psutil.Process(os.getpid()).memory_info().rss / 2**20
