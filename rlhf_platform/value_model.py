"""The PPO value model: a transformer backbone with a scalar head, V(state) per token."""
from __future__ import annotations

from pathlib import Path

import torch

from rlhf_platform.modeling import shared_prompt_hidden_states


class ValueModel(torch.nn.Module):
    """V(prompt, response[:j]) for every response position j, from a base model's last
    hidden state at the position that predicts response token j."""

    def __init__(self, backbone: torch.nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.value_head = torch.nn.Linear(backbone.config.hidden_size, 1)
        # Start at V = 0 everywhere: the first advantages are then the plain returns.
        torch.nn.init.zeros_(self.value_head.weight)
        torch.nn.init.zeros_(self.value_head.bias)

    @classmethod
    def from_pretrained(cls, model_dir: str | Path) -> "ValueModel":
        """The backbone of any HF causal-LM directory (its LM head is not loaded), fp32."""
        from transformers import AutoModel

        return cls(AutoModel.from_pretrained(str(model_dir), dtype=torch.float32))

    def forward(self, prompt_ids: torch.Tensor, response_ids: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
        """Values [n, R] of n responses to one prompt (prompt run once); 0 where masked."""
        hidden = shared_prompt_hidden_states(self.backbone, prompt_ids, response_ids, response_mask)
        head = self.value_head  # in the model's dtype (DeepSpeed casts it to bf16 on a GPU); values in fp32
        return head(hidden.to(head.weight.dtype)).float().squeeze(-1) * response_mask.to(torch.float32)
