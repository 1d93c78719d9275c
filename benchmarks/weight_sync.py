"""Weight sync by each transport vs a plain in-memory copy of the same bytes.

A real vLLM Rollout Engine runs as a Ray actor on a local cluster (127.0.0.1); this
process plays trainer rank 0. Each repetition publishes the policy's weights as a new
version on the weight-sync bus and waits until the engine serves it, once per
transport (`weight_sync.transport`):

  object_store   digest, `ray.put` of raw buffers; the engine maps them from the store
  shared_memory  digest, one write into a tmpfs slot the engine maps read-only
  collective     digest, bucketed gloo broadcast to the engine's receiver thread

Each sync is split into
  transfer  publish until the engine holds verified bytes (digest + put + the engine's
            fetch and digest check), and
  load      into vLLM's model: `unpack` (fresh weight tensors for CPU-packed layers),
            `copy` (vLLM's `load_weights`: names mapped, q/k/v and gate/up fused),
            `repack` (oneDNN packing of every linear layer, CPU only).
The baseline is `copy_` of every tensor into buffers allocated once, in this process
(memory bandwidth alone: the strict baseline). Alternating repetitions, medians.
Target: shared_memory transfer within 3x of the copy. Run from the repository root:

    .venv/bin/python benchmarks/weight_sync.py            # SmolLM2-135M (fp32 publish)
    .venv/bin/python benchmarks/weight_sync.py --smoke    # tiny model
"""
from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import alternate, median, ratio_line  # noqa: E402

TRANSPORTS = ("object_store", "shared_memory", "collective")


def _give_transports(engine, transports: dict) -> None:
    """Inside the engine actor: its own copy of every transport, to switch between."""
    engine.bench_transports = transports


def _use_transport(engine, name: str) -> None:
    """Inside the engine actor: receive by transport `name` from now on."""
    engine.transport = engine.bench_transports[name]


def _sync_seconds(engine) -> dict[str, float]:
    return dict(engine.sync_seconds)


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2_135m", help="smollm2_135m | tiny")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--smoke", action="store_true", help="tiny model, 1 repeat: checks it runs")
    parser.add_argument("--transports", nargs="+", default=list(TRANSPORTS), choices=TRANSPORTS)
    args = parser.parse_args(argv)
    if args.smoke:
        args.model, args.repeats = "tiny", 1

    import ray
    import torch
    from transformers import AutoModelForCausalLM

    from rlhf_platform.config import ModelConfig, RayConfig
    from rlhf_platform.model_store import resolve_model_dir
    from rlhf_platform.roles.collective import CollectiveTransport
    from rlhf_platform.roles.executor import free_port
    from rlhf_platform.roles.object_store import ObjectStoreTransport
    from rlhf_platform.roles.ray_executor import RayExecutor
    from rlhf_platform.roles.rollout_engine import RolloutEngine
    from rlhf_platform.roles.shared_memory import SharedMemoryTransport
    from rlhf_platform.weight_sync import WeightSyncBus, engine_weights, snapshot_of

    model_dir = str(resolve_model_dir(ModelConfig(name=args.model)))
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    weights = engine_weights(model.state_dict(), bool(getattr(model.config, "tie_word_embeddings", False)))
    num_bytes = sum(t.numel() * t.element_size() for t in weights.values())
    executor = RayExecutor(RayConfig(include_dashboard=False))  # connects Ray
    transports = {"object_store": ObjectStoreTransport(), "shared_memory": SharedMemoryTransport(), "collective": CollectiveTransport()}
    stages: dict[str, dict[str, list[float]]] = {name: {} for name in TRANSPORTS}
    try:
        bus = executor.start_role(WeightSyncBus, "weight-bus")
        engine = executor.start_role(RolloutEngine, "rollout-0", "rollout-0", "vllm", model_dir, bus, transports["object_store"])
        engine.served_version().result()  # started
        ray.get(engine.actor.__ray_call__.remote(_give_transports, copy.deepcopy(transports)))
        port = free_port()
        transports["collective"].attach(0, 2, "127.0.0.1", port)  # this process sends, as trainer rank 0 does
        ray.get(engine.actor.__ray_call__.remote(_use_transport, "collective"))
        engine.attach_weights(1, 2, "127.0.0.1", port).result()  # the group forms once
        version = 0

        def sync_by(name: str):
            def sync() -> None:
                nonlocal version
                version += 1
                ray.get(engine.actor.__ray_call__.remote(_use_transport, name))
                before = ray.get(engine.actor.__ray_call__.remote(_sync_seconds))
                started = time.perf_counter()
                bus.publish(snapshot_of(weights, version, transports[name])).result()
                put = time.perf_counter() - started
                assert engine.sync(version).result() == version
                after = ray.get(engine.actor.__ray_call__.remote(_sync_seconds))
                took = {stage: after[stage] - before.get(stage, 0.0) for stage in after}
                record = stages[name]
                fetched = took.pop("fetch + verify")
                record.setdefault("transfer", []).append(put + fetched)
                record.setdefault("transfer: digest + put + publish", []).append(put)
                record.setdefault("transfer: engine fetch + verify", []).append(fetched)
                for stage, seconds in took.items():
                    record.setdefault(stage, []).append(seconds)
            return sync

        buffers = {k: torch.empty_like(v) for k, v in weights.items()}

        def copy_into_buffers() -> None:
            for tensor_name, tensor in weights.items():
                buffers[tensor_name].copy_(tensor)

        seconds = alternate({**{name: sync_by(name) for name in args.transports}, "copy": copy_into_buffers}, args.repeats)
    finally:
        transports["collective"].close()
        transports["shared_memory"].close()
        ray.shutdown()
    copy_s = median(seconds["copy"])
    print(f"model {args.model}: {len(weights)} tensors, {num_bytes / 2**20:.1f} MiB")
    print(f"in-memory copy (baseline): {copy_s * 1000:8.1f} ms  {num_bytes / 2**30 / copy_s:6.2f} GiB/s  (copy_ into warm buffers)")
    ratios = {}
    for name in args.transports:
        recent = {stage: median(values[-args.repeats:]) for stage, values in stages[name].items()}
        ratios[name] = recent["transfer"] / copy_s
        print(f"{name}: publish -> served {median(seconds[name]) * 1000:8.1f} ms (median of {args.repeats})")
        print(f"  transfer            {recent['transfer'] * 1000:8.1f} ms  {ratios[name]:6.2f}x the copy")
        for stage in [s for s in recent if s.startswith(("transfer:", "load"))]:
            print(f"  {stage:19s} {recent[stage] * 1000:8.1f} ms")
    for name in args.transports:
        print(f"transfer / copy, {name}: {ratios[name]:.2f}x")
    ratio = ratios.get("shared_memory", float("nan"))
    print(ratio_line("shared_memory transfer / in-memory copy", ratio, "<= 3x", ratio <= 3.0))
    return ratio


if __name__ == "__main__":
    main()
