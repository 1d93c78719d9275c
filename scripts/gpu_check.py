"""The prepared GPU check: the platform's GPU path, where only torch, transformers and
peft are installed (plus DeepSpeed and the few small packages `gpu_check.sh prepare`
carries). No Ray, no vLLM: the in-process executor and the HF generation backend.

  grpo        a short GRPO run in bf16 on CUDA: HF generation backend, the DeepSpeed
              trainer at ZeRO stage 0, the Reference (KL in the loss); every role's
              model on the GPU; the weights change and the engine serves them
  ipc         the shared_memory transport between two processes on the one GPU (CUDA
              IPC handles): the child opens the trainer's tensors and their digest
              matches, without a copy through the host
  throughput  the DeepSpeed trainer's tokens/s and peak memory against a plain torch
              loop on the same batch (benchmarks/trainer_overhead.py)

Each check prints its figures and `CHECK <name>: ok` or `CHECK <name>: FAILED ...`;
the script exits non-zero if any failed. `--dry-run` runs the same code on the CPU
with the tiny model (the test suite runs it). On the device machine:

    bash scripts/gpu_check.sh run          # after `bash scripts/gpu_check.sh prepare` here
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def model_dir_for(args: argparse.Namespace) -> str:
    """The model the checks train: `--model-dir` (weights), or SmolLM2's architecture
    and tokenizer from `--model-config` with fresh weights (SmolLM2's 98 MB GGUF is over
    what a device call may carry), or the tiny model in a dry run."""
    if args.model_dir:
        return args.model_dir
    if args.model_config:
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

        out = Path(tempfile.mkdtemp(prefix="gpu-check-model-"))
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(args.model_config), dtype=torch.float32)
        model.save_pretrained(out)
        AutoTokenizer.from_pretrained(args.model_config).save_pretrained(out)
        return str(out)
    from rlhf_platform.config import ModelConfig
    from rlhf_platform.model_store import resolve_model_dir

    return str(resolve_model_dir(ModelConfig(name="tiny" if args.dry_run else "smollm2_135m")))


def check_grpo(model_dir: str, args: argparse.Namespace) -> None:
    import torch
    from transformers import AutoTokenizer

    from rlhf_platform.config import (
        AlgoConfig, Config, KLConfig, ModelConfig, RewardConfig, RewardFunctionConfig, RolloutConfig, TaskConfig,
        TrainerConfig, validate,
    )
    from rlhf_platform.data import arithmetic_rows
    from rlhf_platform.prompts import render_prompt
    from rlhf_platform.recipes import online_rl
    from rlhf_platform.recipes.run_roles import start_roles
    from rlhf_platform.roles.inprocess import InProcessExecutor
    from rlhf_platform.types import Prompt

    cfg = validate(Config(
        executor="inprocess",
        model=ModelConfig(name="local", path=model_dir),
        task=TaskConfig(),
        rollout=RolloutConfig(backend="hf", prompts_per_step=8, samples_per_prompt=8, max_new_tokens=16, max_staleness=0),
        trainer=TrainerConfig(max_steps=args.steps, zero_stage=0, micro_batch_size=16, lr=1e-5),
        algo=AlgoConfig(kl=KLConfig(coef=0.01, mode="loss")),
        reward=RewardConfig(functions=[RewardFunctionConfig("brevity", 1.0)]),  # differs within a group even untrained
    ))
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    rows, _ = arithmetic_rows(cfg.task, seed=0)
    prompts = [Prompt(row.prompt_id, row.prompt, tuple(render_prompt(tokenizer, row.prompt)), row.answer, row.difficulty) for row in rows[:200]]
    roles = start_roles(InProcessExecutor(), cfg, Path(model_dir), prompts)
    try:
        trainer, engine, reference = roles.policy.rank0._obj, roles.engines[0]._obj, roles.reference._obj
        want = "cuda" if not args.dry_run else "cpu"
        devices = {
            "trainer": next(trainer.engine.module.parameters()).device.type,
            "engine": next(engine.backend.model.parameters()).device.type,
            "reference": next(reference.model.parameters()).device.type,
        }
        print(f"  devices: {devices}; engine dtype {next(engine.backend.model.parameters()).dtype}")
        assert set(devices.values()) == {want}, f"a role is not on {want}: {devices}"
        before = trainer.weights_digest()
        started = time.perf_counter()
        stats, versions = online_rl.train(roles, cfg)
        seconds = time.perf_counter() - started
        losses = [h["train/loss"] for h in stats.history]
        print(f"  {stats.steps} steps in {seconds:.1f} s ({seconds / max(stats.steps, 1):.2f} s/step); losses {[round(x, 4) for x in losses]}")
        print(f"  {engine.tokens_generated} tokens generated; mismatch KL (engine vs trainer at the same weights) "
              f"{[round(h.get('train/mismatch_kl', float('nan')), 6) for h in stats.history]}")
        if torch.cuda.is_available() and not args.dry_run:
            print(f"  peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")
        assert stats.steps == args.steps and all(math.isfinite(x) for x in losses), "a step failed or its loss is not finite"
        assert trainer.weights_digest() != before, "the weights did not change"
        assert engine.sync(versions.trained) == versions.trained, "the engine does not serve the trained weights"
    finally:
        roles.shutdown()


def _open_in_child(transport, snapshot, results) -> None:
    """Child process: open the published tensors through the transport and verify them."""
    try:
        from rlhf_platform.weight_sync import fetch_verified

        started = time.perf_counter()
        tensors = fetch_verified(snapshot, transport)
        devices = sorted({t.device.type for t in tensors.values()})
        transport.release(snapshot.handle)
        results.put(("ok", devices, time.perf_counter() - started))
    except BaseException as err:  # reported to the parent
        results.put(("error", repr(err), traceback.format_exc()))


def check_ipc(args: argparse.Namespace) -> None:
    import multiprocessing

    import torch

    from rlhf_platform.roles.shared_memory import SharedMemoryTransport
    from rlhf_platform.weight_sync import snapshot_of

    device = torch.device("cpu" if args.dry_run else "cuda")
    dtype = torch.float32 if args.dry_run else torch.bfloat16
    generator = torch.Generator(device=device).manual_seed(0)
    tensors = {f"layer{i}.weight": torch.randn(1024, 1024, device=device, dtype=dtype, generator=generator) for i in range(16)}
    transport = SharedMemoryTransport()
    try:
        started = time.perf_counter()
        snapshot = snapshot_of(tensors, 1, transport)
        put = time.perf_counter() - started
        context = multiprocessing.get_context("spawn")
        results = context.Queue()
        child = context.Process(target=_open_in_child, args=(transport, snapshot, results))
        child.start()
        outcome = results.get(timeout=300)
        child.join(timeout=60)
        if outcome[0] != "ok":
            raise AssertionError(f"the child could not open the weights: {outcome[1]}\n{outcome[2]}")
        _, devices, opened = outcome
        print(f"  {snapshot.num_bytes / 2**20:.0f} MiB on {device}: publish (digest + handles) {put * 1000:.1f} ms; "
              f"child opened and verified them on {devices} in {opened * 1000:.1f} ms")
        assert devices == [device.type], f"the child's tensors are on {devices}, not {device.type}"
    finally:
        transport.close()


def check_throughput(model_dir: str, args: argparse.Namespace) -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import trainer_overhead

    argv = ["--model-dir", model_dir, "--repeats", "1" if args.dry_run else "3"]
    if args.dry_run:
        argv += ["--prompts", "2", "--samples", "4", "--response-len", "8"]
    ratio = trainer_overhead.main(argv)
    assert ratio > 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="the same checks on the CPU with the tiny model")
    parser.add_argument("--model-dir", help="an HF model directory to train")
    parser.add_argument("--model-config", help="an HF directory with config and tokenizer: that architecture, fresh weights")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--only", nargs="*", default=["grpo", "ipc", "throughput"])
    args = parser.parse_args(argv)
    if args.dry_run:
        args.steps = min(args.steps, 2)
    import torch

    if not args.dry_run and not torch.cuda.is_available():
        print("CHECK cuda: FAILED no CUDA device visible (use --dry-run on a CPU machine)")
        return 1
    where = "CPU (dry run)" if args.dry_run else torch.cuda.get_device_name(0)
    print(f"gpu_check on {where}; torch {torch.__version__}")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    model_dir = model_dir_for(args)
    checks = {
        "grpo": lambda: check_grpo(model_dir, args),
        "ipc": lambda: check_ipc(args),
        "throughput": lambda: check_throughput(model_dir, args),  # last: it ends the process group
    }
    failed = []
    for name in [n for n in checks if n in args.only]:
        print(f"--- {name}", flush=True)
        try:
            checks[name]()
            print(f"CHECK {name}: ok", flush=True)
        except BaseException as err:  # every check runs; the exit code tells
            traceback.print_exc()
            print(f"CHECK {name}: FAILED {type(err).__name__}: {err}", flush=True)
            failed.append(name)
    print(f"gpu_check: {'all passed' if not failed else 'FAILED: ' + ', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
