"""Where a role computes: its device, and the one boundary where its inputs move there.

Every role that runs a model (trainer and critic ranks, Reference, reward model, the HF
generation backend) has a device: `cuda:LOCAL_RANK` when a GPU is visible to its
process, the CPU otherwise. Tensors are built on the CPU by the collate code and moved
to the role's device in one place per role (`GroupBatch.to`, or `to_device` for plain
tensors); nothing else creates tensors that meet the model. The dtype policy is
`modeling.resolve_dtype`'s: bf16 on a GPU, fp32 on a CPU.
"""
from __future__ import annotations

import os
from typing import TypeVar

import torch

T = TypeVar("T")


def role_device() -> torch.device:
    """This process's compute device: `cuda:LOCAL_RANK` (modulo the GPUs it sees; Ray
    shows each GPU actor only its own, so that is cuda:0) when CUDA is available, else cpu."""
    if not torch.cuda.is_available():
        return torch.device("cpu")
    index = int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count()
    return torch.device("cuda", index)


def module_device(module: torch.nn.Module) -> torch.device:
    """The device of a module's first parameter (where its inputs must be)."""
    return next(module.parameters()).device


def to_device(device: torch.device, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Each tensor on `device` (no copy for one already there)."""
    return tuple(t.to(device, non_blocking=True) for t in tensors)
