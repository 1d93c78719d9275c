"""The Reference service: per-token logprobs of a frozen copy of the initial policy."""
from __future__ import annotations

import torch

from rlhf_platform.batching import collate_group, prompt_groups
from rlhf_platform.modeling import pad_token_id, shared_prompt_logprobs, use_cores
from rlhf_platform.types import Trajectory


class Reference:
    def __init__(self, model_dir: str, dtype: str = "float32", temperature: float = 1.0, micro_batch_size: int = 16) -> None:
        from transformers import AutoModelForCausalLM

        use_cores()
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=getattr(torch, dtype)).eval()
        self.model.requires_grad_(False)
        self.pad_id = pad_token_id(model_dir)
        self.temperature = temperature
        self.micro_batch_size = micro_batch_size

    @torch.no_grad()
    def annotate(self, trajectories: list[Trajectory]) -> list[Trajectory]:
        """Set `ref_logprobs` on each trajectory's response tokens."""
        for chunk in prompt_groups(trajectories, self.micro_batch_size):
            batch = collate_group(chunk, self.pad_id)
            logprobs = shared_prompt_logprobs(
                self.model, batch.prompt_ids, batch.response_ids, batch.response_mask, self.temperature
            )
            for row, traj in enumerate(chunk):
                traj.ref_logprobs = logprobs[row, : traj.response_length].tolist()
        return trajectories
