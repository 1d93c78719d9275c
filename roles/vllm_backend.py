"""The vLLM backend of the rollout engine (vLLM's CPU build here, CUDA vLLM on GPUs)."""
from __future__ import annotations

import os
import time
from typing import Iterable

import torch

from rlhf_platform.modeling import resolve_dtype
from rlhf_platform.sampling import Sample, SamplingSpec, StepOutput


def _unpack_cpu_linears(model: torch.nn.Module) -> None:
    """On CPU, vLLM packs each linear layer's weight into a oneDNN/SGL handle after
    loading and drops the weight tensor. Give such layers fresh weight parameters (with
    their loaders) so a new checkpoint can be loaded (then re-pack them)."""
    from vllm.model_executor.layers.linear import WEIGHT_LOADER_V2_SUPPORTED, LinearBase

    for module in model.modules():
        if isinstance(module, LinearBase) and hasattr(module, "cpu_linear") and module.weight.numel() == 0:
            v2 = module.quant_method.__class__.__name__ in WEIGHT_LOADER_V2_SUPPORTED
            module.quant_method.create_weights(
                layer=module,
                input_size_per_partition=module.input_size_per_partition,
                output_partition_sizes=module.output_partition_sizes,
                input_size=module.input_size,
                output_size=module.output_size,
                params_dtype=module.params_dtype,
                weight_loader=module.weight_loader_v2 if v2 else module.weight_loader,
            )


def _packed_cpu_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """Layers that compute through a packed oneDNN copy of their weight on CPU
    (`cpu_linear`), whether vLLM dropped the weight (linears) or kept it (the
    vocabulary embedding and LM head, tied or not). The copy is made once, after
    loading, and never reads the weight again: each must be re-packed after new
    weights are loaded, or it computes with the old ones (a tied LM head stayed at the
    base checkpoint's while the embeddings trained, and the engine's log-probs drifted
    from the trainer's with every sync)."""
    return [module for module in model.modules() if hasattr(module, "cpu_linear")]


class WeightLoaderExtension:
    """Mixed into vLLM's worker (worker_extension_cls): loads new weights in place."""

    def rlhf_load_weights(self, named_tensors: list[tuple[str, torch.Tensor]]) -> dict[str, float]:
        """Load new weights in place; seconds of each phase: `unpack` (fresh weight
        tensors for CPU-packed layers), `copy` (vLLM's `load_weights`: names mapped,
        q/k/v and gate/up fused, bytes copied), `repack` (CPU: oneDNN re-packing)."""
        model = self.model_runner.get_model()
        started = time.perf_counter()
        packed = [] if torch.cuda.is_available() else _packed_cpu_layers(model)
        if packed:
            _unpack_cpu_linears(model)
        unpacked = time.perf_counter()
        model.load_weights(weights=iter(named_tensors))
        copied = time.perf_counter()
        for module in packed:
            module.quant_method.process_weights_after_loading(module)
        return {"unpack": unpacked - started, "copy": copied - unpacked, "repack": time.perf_counter() - copied}


class VLLMBackend:
    """Generation through `vllm.LLM`, in the calling process (the engine actor)."""

    def __init__(
        self,
        model_dir: str,
        dtype: str = "auto",
        max_model_len: int = 512,
        seed: int = 0,
        kv_cache_gib: float = 1.0,
        gpu_memory_utilization: float = 0.5,
        tensor_parallel_size: int = 1,
        per_request_seeds: bool = False,
    ) -> None:
        # The engine core runs inside this actor's process rather than a spawned one.
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(max(1, int(round(kv_cache_gib)))))
        # vLLM's "auto" binding keeps one core for a scheduler process that does not
        # exist in-process; on a 2-core machine that halves throughput. Use every core
        # this process may run on unless the user chose a binding.
        cores = sorted(os.sched_getaffinity(0))
        os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", ",".join(map(str, cores)))
        from vllm import LLM

        extra = {}
        on_gpu = torch.cuda.is_available()
        if on_gpu:
            extra["gpu_memory_utilization"] = gpu_memory_utilization
            extra["tensor_parallel_size"] = tensor_parallel_size
        elif per_request_seeds:
            # Streaming seeds each request, so a sample does not depend on what else the
            # engine runs. The CPU sampler's generators cannot rewind the draw of a
            # partially prefilled prompt ("CPU Generator does not use offset"): schedule
            # each prompt's prefill whole instead of in chunks.
            extra["enable_chunked_prefill"] = False
            extra["max_num_batched_tokens"] = max(4096, max_model_len)
        self.per_request_seeds = per_request_seeds or on_gpu
        self.llm = LLM(
            model=model_dir,
            dtype=resolve_dtype(dtype),
            max_model_len=max_model_len,
            seed=seed,
            enforce_eager=not on_gpu,  # CUDA graphs on a GPU; the CPU build runs eagerly
            logprobs_mode="processed_logprobs",
            worker_extension_cls="rlhf_platform.roles.vllm_backend.WeightLoaderExtension",
            **extra,
        )

    def generate(self, prompts: list[list[int]], spec: SamplingSpec) -> list[list[Sample]]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        params = SamplingParams(
            n=spec.n,
            temperature=spec.temperature,
            top_p=spec.top_p,
            max_tokens=spec.max_new_tokens,
            logprobs=None if spec.greedy else 0,
            # vLLM's CPU sampler rejects per-request seeds ("CPU Generator does not use
            # offset"); there it draws from torch's global generator in this process
            # (the engine core runs in-process), which is seeded below instead.
            seed=spec.seed if torch.cuda.is_available() else None,
        )
        if spec.seed is not None and not torch.cuda.is_available():
            torch.manual_seed(spec.seed)
        outputs = self.llm.generate(
            [TokensPrompt(prompt_token_ids=list(p)) for p in prompts], params, use_tqdm=False
        )
        results = []
        for out in outputs:
            samples = []
            for completion in out.outputs:
                ids = list(completion.token_ids)
                logprobs = (
                    [step[tok].logprob for step, tok in zip(completion.logprobs, ids)]
                    if completion.logprobs
                    else []
                )
                samples.append(Sample(ids, logprobs, str(completion.finish_reason), completion.text))
            results.append(samples)
        return results

    def submit(self, request_id: str, prompt: list[int], spec: SamplingSpec) -> None:
        """Streaming: queue one sample of `prompt` in vLLM's engine (stepped by `step`)."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        if spec.n != 1:
            raise ValueError(f"streamed requests sample one reply each, not n={spec.n}")
        if spec.seed is not None and not self.per_request_seeds:
            raise ValueError("seeded streaming on CPU needs VLLMBackend(per_request_seeds=True) (chunked prefill off)")
        params = SamplingParams(
            n=1,
            temperature=spec.temperature,
            top_p=spec.top_p,
            max_tokens=spec.max_new_tokens,
            logprobs=None if spec.greedy else 0,
            seed=spec.seed,
            detokenize=False,  # the text of a whole (possibly resumed) reply is decoded once, at its end
        )
        self.llm.llm_engine.add_request(request_id, TokensPrompt(prompt_token_ids=list(prompt)), params)

    def step(self) -> list[StepOutput]:
        """One engine step over every submitted request (one token each, or a prefill)."""
        progressed = []
        for out in self.llm.llm_engine.step():
            if not out.outputs:
                continue
            completion = out.outputs[0]
            ids = list(completion.token_ids)
            logprobs = [step[tok].logprob for step, tok in zip(completion.logprobs, ids)] if completion.logprobs else []
            finish = str(completion.finish_reason) if out.finished else None
            progressed.append(StepOutput(out.request_id, ids, logprobs, finish))
        return progressed

    def abort(self, request_ids: list[str]) -> None:
        if request_ids:
            self.llm.llm_engine.abort_request(list(request_ids))

    def decode(self, token_ids: list[int]) -> str:
        return self.llm.get_tokenizer().decode(token_ids, skip_special_tokens=True)

    def load_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> dict[str, float]:
        """Load new weights into every worker; the first worker's phase seconds."""
        phases = self.llm.collective_rpc("rlhf_load_weights", args=(list(named_tensors),))
        self.llm.reset_prefix_cache()
        return phases[0]
