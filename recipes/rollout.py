"""A step's prompts shared by every rollout engine.

The prompts are cut into one contiguous slice per engine, balanced by the tokens each
prompt is expected to cost (its prompt once, with prefix caching, and `n` replies of up
to `max_new_tokens`), so N engines take about 1/N of the step each. Slices are
contiguous and engines answer in engine order, so concatenating their answers gives the
samples in the order of the prompts.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any

from rlhf_platform.roles.executor import Future
from rlhf_platform.sampling import SamplingSpec
from rlhf_platform.types import Prompt


def expected_tokens(prompt: Prompt, spec: SamplingSpec) -> int:
    """What generating `spec.n` replies to `prompt` costs, in tokens: its prompt once
    (the replies share its prefix) and n replies of at most `spec.max_new_tokens`."""
    return len(prompt.token_ids) + spec.n * spec.max_new_tokens


def balanced_slices(costs: list[float], parts: int) -> list[slice]:
    """`parts` contiguous slices of `costs` (some empty when there are fewer items),
    each cut where the running total first reaches its share of the whole: the largest
    slice exceeds total / parts by less than one item, and no slice is empty while a
    later one is not."""
    total = float(sum(costs))
    bounds, running, i = [0], 0.0, 0
    for part in range(1, parts):
        target = total * part / parts
        # An item goes where most of it falls; an engine left empty takes the next one
        # (with fewer prompts than engines, the first engines answer one each).
        while i < len(costs) and (running + costs[i] / 2 <= target or i == bounds[-1]):
            running += costs[i]
            i += 1
        bounds.append(i)
    bounds.append(len(costs))
    return [slice(a, b) for a, b in zip(bounds, bounds[1:])]


def generate_across(engines: list[Any], prompts: list[Prompt], spec: SamplingSpec, min_version: int) -> list[Future]:
    """Start `prompts`' generation on every engine, one balanced slice each; the futures
    of the non-empty slices, in prompt order. Each slice samples with its own seed
    (the lease's plus the engine's index), so engines do not repeat one stream."""
    slices = balanced_slices([expected_tokens(p, spec) for p in prompts], len(engines))
    futures = []
    for index, (engine, part) in enumerate(zip(engines, slices)):
        if part.start == part.stop:
            continue
        seeded = spec if spec.seed is None or index == 0 else replace(spec, seed=spec.seed + index)
        futures.append(engine.generate(prompts[part], seeded, min_version))
    return futures
