"""What a rollout engine keeps between streaming calls: the groups it was given, the
replies in flight in its backend, and how a weight update pauses and resumes them.

Every reply is its own backend request, seeded by its group's seed (`sample_seed`). A
partial rollout pauses replies at a token boundary (`pause`: abort, keep the tokens so
far), the engine loads new weights, and `resume` submits each again with its tokens so
far appended to the prompt: the tokens after the pause are sampled, and their log-probs
computed, by the new weights over the whole context; each token keeps its version.
"""
from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Any

from rlhf_platform.sampling import SamplingSpec, StepOutput
from rlhf_platform.streaming import GroupRequest, PinnedSegment, SampleInProgress, sample_seed
from rlhf_platform.types import Trajectory


@dataclass
class GroupInProgress:
    request: GroupRequest
    samples: list[SampleInProgress]
    started: float = field(default_factory=time.time)

    def finished(self) -> bool:
        return all(s.finish_reason is not None for s in self.samples)


class StreamingGenerator:
    def __init__(self, backend: Any, engine_name: str, spec: SamplingSpec) -> None:
        self.backend = backend
        self.engine_name = engine_name
        self.spec = spec  # the run's sampling (n replies per group, of at most max_new_tokens)
        self.waiting: deque[GroupRequest] = deque()  # given, not started (their version is not loaded yet)
        self.groups: dict[int, GroupInProgress] = {}  # started, by lease id
        self.running: dict[str, SampleInProgress] = {}  # submitted to the backend, by request id
        self.paused: list[SampleInProgress] = []
        self.interruptions = 0  # replies paused by a weight update, in total

    def add(self, requests: list[GroupRequest]) -> None:
        self.waiting.extend(requests)

    def admit(self, version: int) -> None:
        """Start every waiting group that may sample from `version` (in the order given)."""
        while self.waiting and self.waiting[0].min_version <= version:
            request = self.waiting.popleft()
            samples = [SampleInProgress(request, i, self.spec.max_new_tokens) for i in range(self.spec.n)]
            self.groups[request.lease_id] = GroupInProgress(request, samples)
            for sample in samples:
                self._submit(sample, version)

    def _submit(self, sample: SampleInProgress, version: int) -> None:
        sample.live_version = version
        spec = replace(self.spec, n=1, max_new_tokens=sample.tokens_left(), seed=sample_seed(sample.group.seed, sample.index, len(sample.token_ids)))
        self.backend.submit(sample.request_id, sample.context(), spec)
        self.running[sample.request_id] = sample

    def step(self) -> list[list[Trajectory]]:
        """One backend step; the groups it finished, as trajectories."""
        finished_groups = []
        for out in self.backend.step():
            sample = self.running.get(out.request_id)
            if sample is None:  # aborted in the meantime
                continue
            sample.live = (out.token_ids, out.logprobs)
            if out.finish_reason is None:
                continue
            del self.running[out.request_id]
            sample.commit()
            sample.finish_reason = out.finish_reason
            group = self.groups[sample.group.lease_id]
            if group.finished():
                del self.groups[sample.group.lease_id]
                finished_groups.append(self._trajectories(group))
        return finished_groups

    def pause(self, counted: bool = True) -> None:
        """Stop every running reply at the token it reached (a weight update is due, or
        the engine is needed for a batch call); `counted`: as an interruption."""
        self.backend.abort(list(self.running))
        for sample in self.running.values():
            sample.commit()
            sample.segment += 1
            self.paused.append(sample)
        self.interruptions += len(self.running) if counted else 0
        self.running.clear()

    def resume(self, version: int, restart: bool = False) -> None:
        """Submit the paused replies again, to be continued by `version`'s weights, or
        with `restart` sampled again from their start (no partial rollout, and the
        weights changed under them)."""
        for sample in self.paused:
            if restart:
                sample.token_ids, sample.logprobs, sample.versions, sample.segments = [], [], [], []
            self._submit(sample, version)
        self.paused.clear()

    def lease_ids(self) -> list[int]:
        """Lease ids of the groups given to this engine and not finished."""
        return [r.lease_id for r in self.waiting] + list(self.groups)

    def drop_all(self) -> list[int]:
        """Forget every unfinished group (the driver takes their prompts back); their lease ids."""
        self.backend.abort(list(self.running))
        lease_ids = [r.lease_id for r in self.waiting] + list(self.groups)
        self.waiting.clear()
        self.groups.clear()
        self.running.clear()
        self.paused.clear()
        return lease_ids

    def _trajectories(self, group: GroupInProgress) -> list[Trajectory]:
        request, prompt = group.request, group.request.prompt
        span = (group.started, time.time())
        trajectories = []
        for sample in group.samples:
            versions = sample.versions
            trajectories.append(
                Trajectory.answering(
                    prompt,
                    group_id=f"{prompt.prompt_id}#L{request.lease_id}",
                    response_token_ids=sample.token_ids,
                    behaviour_logprobs=sample.logprobs,
                    weight_version=min(versions, default=sample.live_version),
                    finish_reason=sample.finish_reason or "length",
                    response_text=self.backend.decode(sample.token_ids),
                    generated_at=span,
                    engine=self.engine_name,
                    sampling_seed=request.seed,
                    lease_id=request.lease_id,
                    token_versions=list(versions) if len(set(versions)) > 1 else None,
                    sample_index=sample.index,
                    segments=list(sample.segments),
                )
            )
        return trajectories


def run_pinned(backend: Any, segments: list[PinnedSegment], spec: SamplingSpec) -> list[StepOutput]:
    """Replay: generate each segment to its end (its token budget, or the reply's end)
    on the backend's current weights; their outputs in order."""
    for segment in segments:
        backend.submit(segment.request_id, segment.context, replace(spec, n=1, max_new_tokens=segment.max_tokens, seed=segment.seed))
    done: dict[str, StepOutput] = {}
    idle_steps = 0
    while len(done) < len(segments):
        outputs = backend.step()
        idle_steps = 0 if outputs else idle_steps + 1
        if idle_steps > 1000:
            raise RuntimeError(f"replay: {len(segments) - len(done)} segments made no progress")
        done.update({out.request_id: out for out in outputs if out.finish_reason is not None})
    return [done[segment.request_id] for segment in segments]
