"""LoRA adapters on the policy (`model.lora.enabled=true`), with peft.

Adapters are injected in place (`peft.inject_adapter_in_model`), so the policy keeps its
transformers module tree (and the shared-prompt KV path keeps working); only the
adapter weights train. The engines and HF exports get merged weights in the base
model's names (W + B·A·alpha/r), so vLLM serves a LoRA policy as a plain model.
"""
from __future__ import annotations

import torch

from rlhf_platform.config import LoraConfig

_ADAPTER = "default"


def add_lora(model: torch.nn.Module, lora: LoraConfig) -> torch.nn.Module:
    """Inject trainable LoRA adapters into `lora.target_modules` and freeze everything else."""
    import peft

    config = peft.LoraConfig(
        r=lora.rank,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=list(lora.target_modules),
        bias="none",
    )
    model = peft.inject_adapter_in_model(config, model, adapter_name=_ADAPTER)
    for name, param in model.named_parameters():
        param.requires_grad = ".lora_" in name
    return model


def merged_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of the model's weights in the base model's names, with each LoRA
    adapter merged into its layer's weight; a model without adapters is copied as is."""
    from peft.tuners.lora import LoraLayer

    adapters = {name: m for name, m in model.named_modules() if isinstance(m, LoraLayer)}
    state: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if ".lora_" in name:
                continue
            if ".base_layer." in name:
                layer, field = name.split(".base_layer.")
                tensor = tensor + adapters[layer].get_delta_weight(_ADAPTER) if field == "weight" else tensor
                name = f"{layer}.{field}"
            state[name] = tensor.detach().clone()
    return state


def trainable_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)
