"""LoRA on the Trainer role (one DeepSpeed rank, tiny model): only adapters train, and
what the engines and HF exports get is the merged policy, loadable as a plain model."""
from __future__ import annotations


import pytest
import torch
from transformers import AutoModelForCausalLM

from rlhf_platform.config import AlgoConfig, LoraConfig, TrainerConfig
from rlhf_platform.lora import add_lora, merged_state_dict, trainable_parameters
from rlhf_platform.roles.trainer import Trainer
from rlhf_platform.types import TrainBatch, Trajectory, UpdatePlan


def test_merged_weights_are_the_adapted_model(tiny_model_dir):
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    original = {k: v.clone() for k, v in base.state_dict().items()}
    model = add_lora(base, LoraConfig(enabled=True, rank=4, alpha=8.0, target_modules=["q_proj", "v_proj"]))
    trainable, total = trainable_parameters(model)
    assert 0 < trainable < total / 10
    assert all(p.requires_grad == (".lora_" in n) for n, p in model.named_parameters())
    merged = merged_state_dict(model)
    assert merged.keys() == original.keys()  # the base model's names: engines load them as is
    assert all(torch.equal(merged[k], original[k]) for k in original)  # B starts at zero
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_()
    merged = merged_state_dict(model)
    plain = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    plain.load_state_dict(merged)
    tokens = torch.randint(0, 100, (2, 9))
    torch.testing.assert_close(plain(input_ids=tokens).logits, model(input_ids=tokens).logits, atol=1e-4, rtol=1e-4)
    assert not torch.equal(merged["model.layers.0.self_attn.q_proj.weight"], original["model.layers.0.self_attn.q_proj.weight"])
    assert torch.equal(merged["model.layers.0.self_attn.k_proj.weight"], original["model.layers.0.self_attn.k_proj.weight"])


@pytest.fixture(scope="module")
def lora_trainer(tiny_model_dir, single_rank_env):
    role = Trainer(str(tiny_model_dir), TrainerConfig(lr=1e-2, micro_batch_size=4), AlgoConfig(), lora=LoraConfig(enabled=True, rank=4))
    role.setup()
    return role


def test_a_lora_step_trains_adapters_only_and_exports_a_plain_model(lora_trainer, tmp_path, tiny_model_dir):
    module = lora_trainer.engine.module
    frozen = {n: p.detach().clone() for n, p in module.named_parameters() if not p.requires_grad}
    before = lora_trainer._full_state()
    batch = [Trajectory("p", "g", [5, 6, 7], [8 + i, 9, 10], [-1.0] * 3, 0, "stop", advantage=a) for i, a in enumerate([1.0, -1.0, 0.5, -0.5])]
    for _ in range(2):  # B is zero at first: the second step moves the merged weights
        metrics = lora_trainer.train_step(UpdatePlan([TrainBatch(batch, 0, 0)], [12.0]))
    assert metrics["train/grad_norm"] > 0
    assert all(torch.equal(p, frozen[n]) for n, p in module.named_parameters() if n in frozen)
    after = lora_trainer._full_state()
    assert after.keys() == before.keys() and any(not torch.equal(after[k], before[k]) for k in after)
    lora_trainer.save_state(str(tmp_path / "ckpt"))
    exported = AutoModelForCausalLM.from_pretrained(tmp_path / "ckpt" / "hf", dtype=torch.float32)
    tokens = torch.tensor([[5, 6, 7, 8, 9]])
    with torch.no_grad():
        torch.testing.assert_close(exported(input_ids=tokens).logits, module(input_ids=tokens).logits, atol=1e-4, rtol=1e-4)
