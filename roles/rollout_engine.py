"""The Rollout Engine role: samples responses at a known weight version.

Between generation batches it polls the weight-sync bus and, when a newer version is
published, fetches it, checks its digest and loads it in place before the next batch:
a batch never mixes versions, and every trajectory records the version it came from.
"""
from __future__ import annotations

import time
import uuid
from typing import Any

from rlhf_platform.modeling import use_cores
from rlhf_platform.roles.metrics import RoleMetrics
from rlhf_platform.sampling import SamplingSpec
from rlhf_platform.roles.executor import call
from rlhf_platform.types import Prompt, Trajectory
from rlhf_platform.weight_sync import Superseded, Transport, fetch_verified


def make_backend(kind: str, model_dir: str, **options: Any):
    """The generation backend named by `rollout.backend`."""
    if kind == "vllm":
        from rlhf_platform.roles.vllm_backend import VLLMBackend

        return VLLMBackend(model_dir, **options)
    if kind == "hf":
        from rlhf_platform.roles.hf_backend import HFBackend

        return HFBackend(model_dir, **options)
    raise ValueError(f"unknown rollout backend {kind!r}; choose vllm or hf")


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

    def served_version(self) -> int:
        return self.version

    def attach_weights(self, member: int, world_size: int, host: str, port: int) -> None:
        """Join the collective transport's weight group as `member` (returns at once)."""
        self.transport.attach(member, world_size, host, port)

    def sync(self, min_version: int = 0) -> int:
        """Load the newest published weights; wait until at least `min_version` is served."""
        deadline = time.monotonic() + self.wait_timeout_s
        while True:
            snapshot = call(self.bus, "latest") if self.bus is not None else None
            if snapshot is not None and snapshot.version > self.version:
                self._load(snapshot)
            if self.version >= min_version:
                return self.version
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name}: weight version {min_version} not published within {self.wait_timeout_s}s")
            time.sleep(0.05)

    def _load(self, snapshot: Any) -> None:
        """Fetch, verify and load one published snapshot, then release it to the
        transport whatever happened (a shared-memory slot stays locked until then). A
        snapshot `Superseded` before it was read is skipped: the next poll finds the newer."""
        started = time.perf_counter()
        try:
            tensors = fetch_verified(snapshot, self.transport)
            fetched = time.perf_counter()
            phases = self.backend.load_weights(tensors.items()) or {}
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

    def generate(self, prompts: list[Prompt], spec: SamplingSpec, min_version: int = 0) -> list[Trajectory]:
        """`spec.n` trajectories per prompt, all at one weight version >= min_version."""
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
                    Trajectory(
                        prompt_id=prompt.prompt_id,
                        group_id=group_id,
                        prompt_token_ids=list(prompt.token_ids),
                        response_token_ids=sample.token_ids,
                        behaviour_logprobs=sample.logprobs,
                        weight_version=version,
                        finish_reason=sample.finish_reason,
                        prompt_text=prompt.text,
                        response_text=sample.text,
                        answer=prompt.answer,
                        difficulty=prompt.difficulty,
                        generated_at=span,
                        engine=self.name,
                        sampling_seed=spec.seed,
                    )
                )
        return trajectories

    def _record_throughput(self, outputs: list[list[Any]], seconds: float) -> None:
        tokens = sum(len(sample.token_ids) for samples in outputs for sample in samples)
        self.tokens_generated += tokens
        self.metrics.add("rollout_tokens", tokens)
        self.metrics.set("rollout_tokens_per_second", tokens / max(seconds, 1e-9))
        self.metrics.set("rollout_samples_per_second", sum(map(len, outputs)) / max(seconds, 1e-9))
