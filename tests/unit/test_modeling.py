"""token_logprobs over the response window equals the full computation there."""
from __future__ import annotations

import torch

from rlhf_platform.batching import collate
from rlhf_platform.modeling import resolve_dtype, token_logprobs
from rlhf_platform.types import Trajectory


def _trajectory(prompt: list[int], response: list[int]) -> Trajectory:
    return Trajectory(
        prompt_id="p",
        group_id="p",
        prompt_token_ids=tuple(prompt),
        response_token_ids=tuple(response),
        behaviour_logprobs=[0.0] * len(response),
        finish_reason="stop",
        weight_version=0,
    )


def test_response_window_matches_full_logprobs(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    batch = collate(
        [_trajectory([5, 6, 7, 8, 9], [10, 11]), _trajectory([5, 6, 7], [12, 13, 14, 15]), _trajectory([5, 6, 7, 8], [])],
        pad_token_id=0,
    )
    # Shortest prompt has 3 tokens: its first response target sits at position 2.
    assert batch.first_response_position == 2
    with torch.no_grad():
        full = token_logprobs(model, batch.input_ids, batch.attention_mask, temperature=0.7)
        window = token_logprobs(model, batch.input_ids, batch.attention_mask, 0.7, batch.first_response_position)
    mask = batch.response_mask.bool()
    torch.testing.assert_close(window[mask], full[mask])
    assert torch.all(window[:, :2] == 0)
    assert window.shape == full.shape == (3, 6)  # longest sequence: 7 tokens


def test_auto_dtype_is_float32_without_a_gpu():
    expected = "bfloat16" if torch.cuda.is_available() else "float32"
    assert resolve_dtype("auto") == expected
    assert resolve_dtype("bfloat16") == "bfloat16"
