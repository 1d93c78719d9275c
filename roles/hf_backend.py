"""The HF `generate` backend of the rollout engine: same interface as vLLM, slower."""
from __future__ import annotations

from typing import Iterable

import torch

from rlhf_platform.devices import role_device, to_device
from rlhf_platform.modeling import resolve_dtype, use_cores
from rlhf_platform.sampling import Sample, SamplingSpec, StepOutput


class HFBackend:
    def __init__(self, model_dir: str, dtype: str = "auto", seed: int = 0, **_: object) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        use_cores()

        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.device = role_device()
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=getattr(torch, resolve_dtype(dtype)))
        self.model.to(self.device).eval()
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        self.eos_id = self.tokenizer.eos_token_id
        self.generator = torch.Generator().manual_seed(seed)
        self.submitted: dict[str, tuple[list[int], SamplingSpec]] = {}

    @torch.no_grad()
    def generate(self, prompts: list[list[int]], spec: SamplingSpec) -> list[list[Sample]]:
        width = max(len(p) for p in prompts)
        # Left-padded so every prompt ends where generation starts.
        ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, p in enumerate(prompts):
            ids[i, width - len(p) :] = torch.tensor(p)
            mask[i, width - len(p) :] = 1
        ids, mask = to_device(self.device, ids, mask)
        seed = spec.seed if spec.seed is not None else int(torch.randint(0, 2**31 - 1, (1,), generator=self.generator))
        torch.manual_seed(seed)
        out = self.model.generate(
            input_ids=ids.repeat_interleave(spec.n, 0),
            attention_mask=mask.repeat_interleave(spec.n, 0),
            do_sample=not spec.greedy,
            temperature=spec.temperature if not spec.greedy else None,
            top_p=spec.top_p if not spec.greedy else None,
            top_k=None,
            max_new_tokens=spec.max_new_tokens,
            pad_token_id=self.pad_id,
            eos_token_id=self.eos_id,
            output_logits=not spec.greedy,
            return_dict_in_generate=True,
        )
        new_tokens = out.sequences[:, width:].cpu()
        logprobs = None
        if not spec.greedy:
            logits = torch.stack(out.logits, dim=1).float() / spec.temperature
            logprobs = torch.log_softmax(logits, -1).gather(-1, new_tokens.to(logits.device).unsqueeze(-1)).squeeze(-1).cpu()
        results: list[list[Sample]] = []
        for row in range(new_tokens.shape[0]):
            tokens = new_tokens[row].tolist()
            finish = "length"
            if self.eos_id in tokens:
                tokens = tokens[: tokens.index(self.eos_id) + 1]
                finish = "stop"
            lps = logprobs[row, : len(tokens)].tolist() if logprobs is not None else []
            text = self.tokenizer.decode(tokens, skip_special_tokens=True)
            if row % spec.n == 0:
                results.append([])
            results[-1].append(Sample(tokens, lps, finish, text))
        return results

    def submit(self, request_id: str, prompt: list[int], spec: SamplingSpec) -> None:
        """Streaming: queue one sample of `prompt`. HF `generate` cannot stop between
        tokens, so this backend streams whole replies: `step` finishes every submitted
        request (one `generate` each, seeded by its own seed)."""
        if spec.n != 1:
            raise ValueError(f"streamed requests sample one reply each, not n={spec.n}")
        self.submitted[request_id] = (list(prompt), spec)

    def step(self) -> list[StepOutput]:
        finished = []
        for request_id, (prompt, spec) in list(self.submitted.items()):
            sample = self.generate([prompt], spec)[0][0]
            finished.append(StepOutput(request_id, sample.token_ids, sample.logprobs, sample.finish_reason))
            del self.submitted[request_id]
        return finished

    def abort(self, request_ids: list[str]) -> None:
        for request_id in request_ids:
            self.submitted.pop(request_id, None)

    def decode(self, token_ids: list[int]) -> str:
        return self.tokenizer.decode(token_ids, skip_special_tokens=True)

    @torch.no_grad()
    def load_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        params = dict(self.model.named_parameters())
        for name, tensor in named_tensors:
            params[name].copy_(tensor)
