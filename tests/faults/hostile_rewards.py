"""Misbehaving reward functions for the reward-service fault tests. A module of its own,
with no heavy imports: the reward workers import it to unpickle the function."""
from __future__ import annotations

import threading


def picky(prompts, completions, **_):
    """Raises on replies containing "boom", hangs on "hang" (forever: only a kill ends it),
    else scores the length."""
    for c in completions:
        if "boom" in c:
            raise RuntimeError(f"cannot parse {c!r}")
        if "hang" in c:
            threading.Event().wait()
    return [float(len(c)) for c in completions]
