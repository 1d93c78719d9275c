"""The Reference service: per-token logprobs of a frozen copy of the initial policy."""
from __future__ import annotations

import torch

from rlhf_platform.batching import GroupBatch, collate_group, prompt_groups
from rlhf_platform.devices import role_device
from rlhf_platform.modeling import pad_token_id, resolve_dtype, shared_prompt_logprobs, use_cores
from rlhf_platform.types import Trajectory


class Reference:
    def __init__(self, model_dir: str, dtype: str = "auto", temperature: float = 1.0, micro_batch_size: int = 16) -> None:
        """The frozen model on this process's device (a GPU when it reserved one), in
        `dtype` (auto: bf16 on a GPU, fp32 on a CPU)."""
        from transformers import AutoModelForCausalLM

        use_cores()
        self.device = role_device()
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=getattr(torch, resolve_dtype(dtype)))
        self.model.to(self.device).eval()
        self.model.requires_grad_(False)
        self.pad_id = pad_token_id(model_dir)
        self.temperature = temperature
        self.micro_batch_size = micro_batch_size

    @torch.no_grad()
    def annotate(self, trajectories: list[Trajectory]) -> list[Trajectory]:
        """Set `ref_logprobs` on each trajectory's response tokens."""
        for chunk in prompt_groups(trajectories, self.micro_batch_size):
            logprobs = self._logprobs(collate_group(chunk, self.pad_id)).cpu()
            for row, traj in enumerate(chunk):
                traj.ref_logprobs = logprobs[row, : traj.response_length].tolist()
        return trajectories

    def _logprobs(self, batch: GroupBatch) -> torch.Tensor:
        """[n, R] log-probs of a group collated on the CPU, computed on this role's device."""
        batch = batch.to(self.device)
        return shared_prompt_logprobs(self.model, batch.prompt_ids, batch.response_ids, batch.response_mask, self.temperature)
