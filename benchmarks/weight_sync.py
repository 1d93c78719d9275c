"""Weight sync: publish-to-served latency of the full policy vs a plain in-memory copy.

A real vLLM Rollout Engine runs as a Ray actor on a local cluster (127.0.0.1). Each
repetition publishes the policy's weights as a new version on the weight-sync bus
(digest + object store put) and waits until the engine serves it (fetch, digest check,
load into vLLM); the baseline copies the same bytes in memory in this process
(`copy_` of every tensor into buffers allocated once: memory bandwidth alone, the
strict baseline). Also printed: `tensor.clone()` into fresh memory, whose page faults
made it vary from 95 to 760 ms between runs here. Alternating repetitions, medians;
target: sync within 3x of the copy. Run from the repository root:

    .venv/bin/python benchmarks/weight_sync.py            # SmolLM2-135M (fp32 publish)
    .venv/bin/python benchmarks/weight_sync.py --smoke    # tiny model
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import alternate, median, ratio_line  # noqa: E402


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2_135m", help="smollm2_135m | tiny")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--smoke", action="store_true", help="tiny model, 1 repeat: checks it runs")
    args = parser.parse_args(argv)
    if args.smoke:
        args.model, args.repeats = "tiny", 1

    import ray
    import torch
    from transformers import AutoModelForCausalLM

    from rlhf_platform.config import ModelConfig, RayConfig
    from rlhf_platform.model_store import resolve_model_dir
    from rlhf_platform.roles.ray_executor import RayExecutor
    from rlhf_platform.roles.rollout_engine import RolloutEngine
    from rlhf_platform.weight_sync import WeightSyncBus, engine_weights, snapshot_of

    model_dir = str(resolve_model_dir(ModelConfig(name=args.model)))
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    weights = engine_weights(model.state_dict(), bool(getattr(model.config, "tie_word_embeddings", False)))
    num_bytes = sum(t.numel() * t.element_size() for t in weights.values())
    executor = RayExecutor(RayConfig(include_dashboard=False))  # connects Ray
    try:
        transport = executor.transport()  # the Ray object store
        bus = executor.start_role(WeightSyncBus, "weight-bus")
        engine = executor.start_role(RolloutEngine, "rollout-0", "rollout-0", "vllm", model_dir, bus, transport)
        engine.served_version().result()  # started
        version = 0
        stages: dict[str, list[float]] = {"digest + put": [], "publish": [], "engine: fetch + verify": [], "engine: load": []}
        engine_seconds = lambda: ray.get(engine.actor.__ray_call__.remote(lambda e: dict(e.sync_seconds)))  # noqa: E731

        def sync() -> None:
            nonlocal version
            version += 1
            started = time.perf_counter()
            snapshot = snapshot_of(weights, version, transport)
            stages["digest + put"].append(time.perf_counter() - started)
            publishing = time.perf_counter()
            bus.publish(snapshot).result()
            stages["publish"].append(time.perf_counter() - publishing)
            before = engine_seconds()
            assert engine.sync(version).result() == version
            after = engine_seconds()
            for stage in after:
                stages[f"engine: {stage}"].append(after[stage] - before[stage])

        def copy() -> None:
            copied = {k: v.clone() for k, v in weights.items()}
            assert len(copied) == len(weights)

        # Also a copy into buffers allocated once (no page faults): memory bandwidth alone.
        buffers = {k: torch.empty_like(v) for k, v in weights.items()}

        def copy_into_buffers() -> None:
            for name, tensor in weights.items():
                buffers[name].copy_(tensor)

        seconds = alternate({"sync": sync, "copy": copy, "copy into buffers": copy_into_buffers}, args.repeats)
    finally:
        ray.shutdown()
    sync_s, copy_s, buffers_s = median(seconds["sync"]), median(seconds["copy"]), median(seconds["copy into buffers"])
    print(f"model {args.model}: {len(weights)} tensors, {num_bytes / 2**20:.1f} MiB")
    print(f"publish -> served: {sync_s * 1000:8.1f} ms (median of {args.repeats})  {num_bytes / 2**30 / sync_s:6.2f} GiB/s")
    for stage, values in stages.items():
        print(f"  {stage:24s} {median(values[-args.repeats:]) * 1000:8.1f} ms")
    print(f"clone (fresh memory): {copy_s * 1000:8.1f} ms  {num_bytes / 2**30 / copy_s:6.2f} GiB/s  (sync / clone {sync_s / copy_s:.2f}x)")
    print(f"in-memory copy:       {buffers_s * 1000:8.1f} ms  {num_bytes / 2**30 / buffers_s:6.2f} GiB/s  (copy_ into warm buffers)")
    ratio = sync_s / buffers_s
    print(ratio_line("publish-to-served latency / in-memory copy", ratio, "<= 3x", ratio <= 3.0))
    return ratio


if __name__ == "__main__":
    main()
