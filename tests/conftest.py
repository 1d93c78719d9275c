"""Shared fixtures. Tests bind Ray to 127.0.0.1 only."""
from __future__ import annotations

import os

import pytest

os.environ.setdefault("WANDB_MODE", "offline")
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # see rlhf_platform.roles.ray_executor.keep_ray_on_loopback


@pytest.fixture(scope="session")
def tiny_model_dir():
    from rlhf_platform.config import TinyModelConfig
    from rlhf_platform.model_store import tiny_model_dir

    return tiny_model_dir(TinyModelConfig())


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def ray_local():
    import ray

    from rlhf_platform.roles.ray_executor import connect_ray
    from support import small_cfg

    cfg = small_cfg()
    connect_ray(cfg.ray)
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def single_rank_env():
    """torch.distributed env of a one-rank group in this process. Roles that join it
    (Trainer.setup) share one process group for the whole session: DeepSpeed keeps a
    handle on the first group, so a destroyed and re-created one breaks later roles."""
    from rlhf_platform.roles.executor import free_port

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
    yield
    import torch

    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
