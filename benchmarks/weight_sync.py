"""Weight sync: publish-to-served latency of the full policy vs a plain in-memory copy.

A real vLLM Rollout Engine runs as a Ray actor on a local cluster (127.0.0.1). Each
repetition publishes the policy's weights as a new version on the weight-sync bus
(digest + object store put) and waits until the engine serves it (fetch, digest check,
load into vLLM); the baseline copies the same bytes in memory in this process
(`tensor.clone()` of every tensor). Alternating repetitions, medians; target: sync
within 3x of the copy. Run from the repository root:

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

    from rlhf_platform.cluster import connect_ray
    from rlhf_platform.config import ModelConfig, RayConfig
    from rlhf_platform.models import resolve_model_dir
    from rlhf_platform.roles.group import start_role
    from rlhf_platform.roles.rollout_engine import RolloutEngine
    from rlhf_platform.weight_sync import ObjectStoreTransport, WeightSyncBus, engine_weights, snapshot_of

    model_dir = str(resolve_model_dir(ModelConfig(name=args.model)))
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    weights = engine_weights(model.state_dict(), bool(getattr(model.config, "tie_word_embeddings", False)))
    num_bytes = sum(t.numel() * t.element_size() for t in weights.values())
    connect_ray(RayConfig(include_dashboard=False))
    try:
        bus = start_role(WeightSyncBus, "weight-bus")
        engine = start_role(RolloutEngine, "rollout-0", "rollout-0", "vllm", model_dir, bus)
        ray.get(engine.served_version.remote())  # started
        transport = ObjectStoreTransport()
        version = 0
        stages: dict[str, list[float]] = {"digest + put": [], "fetch + verify + load": []}

        def sync() -> None:
            nonlocal version
            version += 1
            started = time.perf_counter()
            snapshot = snapshot_of(weights, version, transport)
            stages["digest + put"].append(time.perf_counter() - started)
            ray.get(bus.publish.remote(snapshot))
            before = ray.get(engine.__ray_call__.remote(lambda e: e.sync_seconds))
            assert ray.get(engine.sync.remote(version)) == version
            after = ray.get(engine.__ray_call__.remote(lambda e: e.sync_seconds))
            stages["fetch + verify + load"].append(after - before)

        def copy() -> None:
            copied = {k: v.clone() for k, v in weights.items()}
            assert len(copied) == len(weights)

        seconds = alternate({"sync": sync, "copy": copy}, args.repeats)
    finally:
        ray.shutdown()
    sync_s, copy_s = median(seconds["sync"]), median(seconds["copy"])
    print(f"model {args.model}: {len(weights)} tensors, {num_bytes / 2**20:.1f} MiB")
    print(f"publish -> served: {sync_s * 1000:8.1f} ms (median of {args.repeats})  {num_bytes / 2**30 / sync_s:6.2f} GiB/s")
    for stage, values in stages.items():
        print(f"  {stage:24s} {median(values[-args.repeats:]) * 1000:8.1f} ms")
    print(f"in-memory copy:    {copy_s * 1000:8.1f} ms  {num_bytes / 2**30 / copy_s:6.2f} GiB/s")
    ratio = sync_s / copy_s
    print(ratio_line("publish-to-served latency / in-memory copy", ratio, "<= 3x", ratio <= 3.0))
    return ratio


if __name__ == "__main__":
    main()
