"""The Rollout Engine role: samples responses at a known weight version.

Two ways to be asked. `generate`: one batch, at one version (between batches it polls
the weight-sync bus and, when a newer version is published, fetches it, checks its
digest and loads it in place). `stream`: groups are handed over as they come and
returned as they finish, while the engine goes on with the rest; when new weights are
published it either lets its replies in flight finish first, or (partial rollout)
pauses them at a token, loads, and continues them, each token tagged with its version.
"""
from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass
from typing import Any

from rlhf_platform.modeling import use_cores
from rlhf_platform.roles.executor import RoleDied, call, in_actor_process
from rlhf_platform.roles.metrics import RoleMetrics
from rlhf_platform.roles.streaming_generator import StreamingGenerator, run_pinned
from rlhf_platform.sampling import SamplingSpec, StepOutput
from rlhf_platform.streaming import GroupRequest, PinnedSegment
from rlhf_platform.types import Prompt, Trajectory
from rlhf_platform.weight_sync import DigestMismatch, NamedTensors, Superseded, Transport, fetch_verified


class WeightsRefused(RoleDied):
    """A published snapshot failed verification twice; nothing was loaded. The caller
    treats it as the engine's fault (the call's prompts go back) and publishes again."""


class WeightsLost(RoleDied):
    """The weight bus restarted and holds nothing: the driver publishes the trainer's weights again."""


class EngineBroken(RoleDied):
    """A weight load failed half-way; the engine's weights cannot be trusted. The role
    must be started again (Ray does when the process ends; the in-process executor
    builds it again when it sees `restarts_role`)."""

    restarts_role = True


def make_backend(kind: str, model_dir: str, **options: Any):
    """The generation backend named by `rollout.backend`."""
    if kind == "vllm":
        from rlhf_platform.roles.vllm_backend import VLLMBackend

        return VLLMBackend(model_dir, **options)
    if kind == "hf":
        from rlhf_platform.roles.hf_backend import HFBackend

        return HFBackend(model_dir, **options)
    raise ValueError(f"unknown rollout backend {kind!r}; choose vllm or hf")


@dataclass
class StreamBatch:
    """What one `stream` call returns: the groups that finished, what is left in the
    engine, and how the call's time was spent."""

    groups: list[list[Trajectory]]
    holding: list[int]  # lease ids of the groups given to the engine and not finished
    busy_seconds: float  # generating
    sync_seconds: float  # loading weights
    interruptions: int = 0  # replies paused by a weight update (partial rollout), in total


class RolloutEngine:
    def __init__(
        self,
        name: str,
        backend: str,
        model_dir: str,
        bus: Any = None,
        transport: Transport | None = None,
        wait_timeout_s: float = 600.0,
        cpu_cores: list[int] | None = None,
        **backend_options: Any,
    ) -> None:
        self.name = name
        if cpu_cores:  # before the backend starts: vLLM binds its threads to the cores it may use
            use_cores(cores=cpu_cores)
        self.backend = make_backend(backend, model_dir, **backend_options)
        self.bus = bus
        self.transport = transport  # the executor's (how published weights travel here)
        self.wait_timeout_s = wait_timeout_s
        self.version = 0  # the initial weights
        self.tokens_generated = 0
        self.sync_seconds = {"fetch + verify": 0.0, "load": 0.0}  # totals, by stage (and the backend's load phases)
        self.metrics = RoleMetrics(name)
        self.metrics.set("weight_version_served", self.version)
        self.streaming: StreamingGenerator | None = None
        self.partial = False  # streaming: whether replies continue across weight updates
        self.broken = ""  # why this engine's weights cannot be trusted (a load failed half-way)

    def served_version(self) -> int:
        return self.version

    def attach_weights(self, member: int, world_size: int, host: str, port: int) -> None:
        """Join the collective transport's weight group as `member` (returns at once)."""
        self.transport.attach(member, world_size, host, port)

    def sync(self, min_version: int = 0) -> int:
        """Load the newest published weights; wait until at least `min_version` is served."""
        deadline = time.monotonic() + self.wait_timeout_s
        while True:
            snapshot = self._latest()
            if snapshot is not None and snapshot.version > self.version:
                self._load(snapshot)
            if self.version >= min_version:
                return self.version
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name}: weight version {min_version} not published within {self.wait_timeout_s}s")
            time.sleep(0.05)

    def _latest(self) -> Any:
        """The bus's newest snapshot. An empty bus after this engine loaded published
        weights restarted and lost them: `WeightsLost` (the driver publishes again)."""
        if self.bus is None:
            return None
        snapshot = call(self.bus, "latest")
        if snapshot is None and self.version > 0:
            raise WeightsLost(f"{self.name}: the weight bus holds no snapshot after version {self.version} (it restarted)")
        return snapshot

    def _load(self, snapshot: Any) -> None:
        """Switch to one published snapshot as a transaction: fetch and verify it (once
        more on a digest mismatch), load it, then label the engine with its version. The
        snapshot goes back to the transport whatever happened (a shared-memory slot stays
        locked until then); one `Superseded` before it was read is skipped (the next poll
        finds the newer). A snapshot that fails verification twice is reported to the
        bus and refused (`WeightsRefused`): nothing was loaded, the engine keeps serving
        its version. A load that fails half-way leaves mixed weights: the engine is
        broken for good and, in its own process, ends it so that Ray starts it afresh."""
        if self.broken:
            raise EngineBroken(self.broken)
        started = time.perf_counter()
        try:
            tensors = self._fetch_verified(snapshot)
            fetched = time.perf_counter()
            try:
                phases = self.backend.load_weights(tensors.items()) or {}
            except Exception as err:
                self._break(f"{self.name}: loading weight version {snapshot.version} failed half-way, its weights are "
                            f"mixed: {type(err).__name__}: {err}")
            del tensors
        except Superseded:
            return
        finally:
            self.transport.release(snapshot.handle)
        for phase, seconds in phases.items():
            self.sync_seconds[f"load: {phase}"] = self.sync_seconds.get(f"load: {phase}", 0.0) + seconds
        self.version = snapshot.version
        self.sync_seconds["fetch + verify"] += fetched - started
        self.sync_seconds["load"] += time.perf_counter() - fetched
        call(self.bus, "report_served", self.name, self.version)
        self.metrics.set("weight_version_served", self.version)

    def _fetch_verified(self, snapshot: Any) -> NamedTensors:
        try:
            return fetch_verified(snapshot, self.transport)
        except DigestMismatch:
            pass  # a torn read or a bad copy in transit: fetch again
        try:
            return fetch_verified(snapshot, self.transport)
        except DigestMismatch as err:
            call(self.bus, "report_corrupt", self.name, snapshot.version)
            raise WeightsRefused(f"{self.name}: {err} (fetched twice); still serving version {self.version}") from None

    def _break(self, reason: str) -> None:
        self.broken = reason
        if in_actor_process():
            os._exit(70)  # Ray restarts the actor from its constructor: clean weights
        raise EngineBroken(reason)

    def generate(self, prompts: list[Prompt], spec: SamplingSpec, min_version: int = 0) -> list[Trajectory]:
        """`spec.n` trajectories per prompt, all at one weight version >= min_version.
        Streamed replies in flight (an evaluation between steps) pause meanwhile: the
        backend's batch call would step them too."""
        paused_at = self.version
        if self.streaming is not None and self.streaming.running:
            self.streaming.pause(counted=False)
        try:
            return self._generate(prompts, spec, min_version)
        finally:
            if self.streaming is not None and self.streaming.paused:
                # without partial rollout a reply is never continued by other weights
                self.streaming.resume(self.version, restart=self.version != paused_at and not self.partial)

    def _generate(self, prompts: list[Prompt], spec: SamplingSpec, min_version: int) -> list[Trajectory]:
        version = self.sync(min_version)
        started = time.time()
        outputs = self.backend.generate([list(p.token_ids) for p in prompts], spec)
        span = (started, time.time())
        self._record_throughput(outputs, span[1] - span[0])
        batch_id = uuid.uuid4().hex[:8]
        trajectories = []
        for prompt, samples in zip(prompts, outputs):
            group_id = f"{prompt.prompt_id}#{batch_id}"
            for sample in samples:
                trajectories.append(
                    Trajectory.answering(
                        prompt,
                        group_id=group_id,
                        response_token_ids=sample.token_ids,
                        behaviour_logprobs=sample.logprobs,
                        weight_version=version,
                        finish_reason=sample.finish_reason,
                        response_text=sample.text,
                        generated_at=span,
                        engine=self.name,
                        sampling_seed=spec.seed,
                    )
                )
        return trajectories

    def stream(
        self, requests: list[GroupRequest], spec: SamplingSpec, partial: bool = False,
        want_groups: int = 1, max_seconds: float = 2.0,
    ) -> StreamBatch:
        """Take `requests` and generate until `want_groups` groups finished, `max_seconds`
        passed, or nothing is left to run; the finished groups. Unfinished groups stay
        for the next call. Before each engine step a newer published version is loaded:
        with `partial` at once (replies in flight pause and continue on it), otherwise
        once the replies in flight finished (no new group starts meanwhile)."""
        if self.streaming is None:
            self.streaming = StreamingGenerator(self.backend, self.name, spec)
        gen, self.partial = self.streaming, partial
        gen.add(requests)
        started = time.monotonic()
        busy = sync = 0.0
        finished: list[list[Trajectory]] = []
        while True:
            snapshot = self._latest()
            if snapshot is not None and snapshot.version > self.version and (partial or not gen.running):
                before = time.perf_counter()
                gen.pause()
                self._load(snapshot)
                gen.resume(self.version)
                sync += time.perf_counter() - before
            if snapshot is None or snapshot.version <= self.version or partial:
                gen.admit(self.version)  # no new group starts while the engine drains for an update
            if not gen.running:
                break
            before = time.perf_counter()
            done = gen.step()
            busy += time.perf_counter() - before
            self._record_tokens(sum(t.response_length for group in done for t in group))
            finished += done
            if len(finished) >= want_groups or time.monotonic() - started > max_seconds:
                break
        return StreamBatch(finished, gen.lease_ids(), busy, sync, gen.interruptions)

    def generate_pinned(self, segments: list[PinnedSegment], spec: SamplingSpec, version: int) -> list[StepOutput]:
        """Replay: `segments` sampled at exactly weights `version` (the newest published)."""
        if self.sync(version) != version:
            raise RuntimeError(f"{self.name}: replay needs weights version {version}, but version {self.version} is published")
        return run_pinned(self.backend, segments, spec)

    def decode(self, replies: list[list[int]]) -> list[str]:
        """The text of each reply's tokens, as the streamed ones are decoded."""
        return [self.backend.decode(tokens) for tokens in replies]

    def drop_stream(self) -> list[int]:
        """Forget the groups given to `stream` and not finished; their lease ids (the
        driver puts their prompts back)."""
        return self.streaming.drop_all() if self.streaming is not None else []

    def _record_tokens(self, tokens: int) -> None:
        self.tokens_generated += tokens
        self.metrics.add("rollout_tokens", tokens)

    def _record_throughput(self, outputs: list[list[Any]], seconds: float) -> None:
        tokens = sum(len(sample.token_ids) for samples in outputs for sample in samples)
        self._record_tokens(tokens)
        self.metrics.set("rollout_tokens_per_second", tokens / max(seconds, 1e-9))
        self.metrics.set("rollout_samples_per_second", sum(map(len, outputs)) / max(seconds, 1e-9))
