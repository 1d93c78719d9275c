"""Sampling settings and what a generation backend returns: the types the rollout engine, its backends and evaluation share."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Protocol

import torch

if TYPE_CHECKING:
    from rlhf_platform.config import RolloutConfig


@dataclass
class SamplingSpec:
    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 32
    seed: int | None = None

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    @classmethod
    def for_rollout(cls, rollout: "RolloutConfig", seed: int | None) -> "SamplingSpec":
        """Training-time sampling as `rollout.*` configures it, seeded per lease."""
        return cls(
            n=rollout.samples_per_prompt,
            temperature=rollout.temperature,
            top_p=rollout.top_p,
            max_new_tokens=rollout.max_new_tokens,
            seed=seed,
        )


@dataclass
class Sample:
    token_ids: list[int]
    logprobs: list[float]  # of each sampled token, after temperature (empty when greedy)
    finish_reason: str  # "stop" (EOS) or "length"
    text: str


@dataclass
class StepOutput:
    """A streamed request after an engine step: every token it has generated so far
    (since it was submitted), and why it finished (None while it runs)."""

    request_id: str
    token_ids: list[int]
    logprobs: list[float]  # of each token, after temperature (empty when greedy)
    finish_reason: str | None = None


class GenerationBackend(Protocol):
    def generate(self, prompts: list[list[int]], spec: SamplingSpec) -> list[list[Sample]]:
        """`spec.n` samples for each prompt (token ids in, token ids out)."""

    def submit(self, request_id: str, prompt: list[int], spec: SamplingSpec) -> None:
        """Streaming: start one sample (`spec.n` must be 1) of `prompt`, seeded by `spec.seed`."""

    def step(self) -> list[StepOutput]:
        """Streaming: advance the submitted requests; the ones that progressed."""

    def abort(self, request_ids: list[str]) -> None:
        """Streaming: stop these requests (their tokens so far are what `step` returned)."""

    def decode(self, token_ids: list[int]) -> str:
        """The text of response tokens (special tokens skipped)."""

    def load_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> dict[str, float] | None:
        """Replace the served weights in place (HF parameter names); optionally the
        seconds of each phase of the load (for the weight-sync benchmark)."""
