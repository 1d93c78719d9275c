"""Per-token logprobs: the shared-prompt path and the response window equal the plain
full-sequence computation, values and gradients."""
from __future__ import annotations

import torch

from rlhf_platform.batching import collate_group, prompt_groups
from rlhf_platform.algos.losses import entropy_from_logits
from rlhf_platform.modeling import (
    resolve_dtype,
    response_logprobs,
    shared_prompt_hidden_states,
    shared_prompt_logprobs,
    token_logprobs,
)
from rlhf_platform.types import TrainBatch, Trajectory

PROMPT = [5, 6, 7, 8, 9]
RESPONSES = [[10, 11], [12, 13, 14, 15], []]


def _trajectory(prompt: list[int], response: list[int], group: str = "g") -> Trajectory:
    return Trajectory(
        prompt_id=group,
        group_id=group,
        prompt_token_ids=list(prompt),
        response_token_ids=list(response),
        behaviour_logprobs=[0.0] * len(response),
        weight_version=0,
        finish_reason="stop",
    )


def _model(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)


def _full_sequence_logprobs(model, response: list[int], temperature: float) -> torch.Tensor:
    """The oracle: one unpadded sequence through the model, response positions only."""
    ids = torch.tensor([PROMPT + response])
    full = token_logprobs(model, ids, torch.ones_like(ids), temperature)
    return full[0, len(PROMPT) - 1 :]


def test_shared_prompt_logprobs_equal_full_sequences(tiny_model_dir):
    model = _model(tiny_model_dir).eval()
    batch = collate_group([_trajectory(PROMPT, r) for r in RESPONSES], pad_token_id=0)
    assert batch.response_ids.shape == (3, 4)
    with torch.no_grad():
        grouped = shared_prompt_logprobs(model, batch.prompt_ids, batch.response_ids, batch.response_mask, 0.7)
        for row, response in enumerate(RESPONSES):
            expected = _full_sequence_logprobs(model, response, 0.7)
            torch.testing.assert_close(grouped[row, : len(response)], expected)
            assert torch.all(grouped[row, len(response) :] == 0)  # padding


def test_shared_prompt_gradient_equals_full_sequence_gradient(tiny_model_dir):
    model = _model(tiny_model_dir)
    batch = collate_group([_trajectory(PROMPT, r) for r in RESPONSES[:2]], pad_token_id=0)
    shared_prompt_logprobs(model, batch.prompt_ids, batch.response_ids, batch.response_mask).sum().backward()
    grouped = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    sum(_full_sequence_logprobs(model, r, 1.0).sum() for r in RESPONSES[:2]).backward()
    for name, param in model.named_parameters():
        torch.testing.assert_close(grouped[name], param.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_shared_prompt_entropy_equals_full_sequence_entropy(tiny_model_dir):
    model = _model(tiny_model_dir).eval()
    batch = collate_group([_trajectory(PROMPT, r) for r in RESPONSES], pad_token_id=0)
    with torch.no_grad():
        _, entropy = shared_prompt_logprobs(
            model, batch.prompt_ids, batch.response_ids, batch.response_mask, 0.7, with_entropy=True
        )
        for row, response in enumerate(RESPONSES):
            ids = torch.tensor([PROMPT + response])
            logits = model(input_ids=ids).logits[0, len(PROMPT) - 1 : -1] / 0.7
            expected = entropy_from_logits(logits.unsqueeze(0), torch.ones(1, len(response)))[0]
            torch.testing.assert_close(entropy[row, : len(response)], expected)
            assert torch.all(entropy[row, len(response) :] == 0)


def _oracle(model, prompt: list[int], response: list[int]) -> torch.Tensor:
    ids = torch.tensor([prompt + response])
    return token_logprobs(model, ids, torch.ones_like(ids))[0, len(prompt) - 1 :]


MIXED = [([5, 6, 7, 8, 9], [10, 11]), ([20, 21], [12, 13, 14, 15]), ([30, 31, 32], []), ([40], [16])]


def test_response_logprobs_of_different_prompts_equal_full_sequences(tiny_model_dir):
    model = _model(tiny_model_dir).eval()
    rows = [_trajectory(p, r, group=str(i)) for i, (p, r) in enumerate(MIXED)]
    with torch.no_grad():
        logprobs, mask = response_logprobs(model, rows, pad_id=0)
        assert logprobs.shape == mask.shape == (4, 4)
        for row, (prompt, response) in enumerate(MIXED):
            assert mask[row].sum() == len(response)
            if response:
                torch.testing.assert_close(logprobs[row, : len(response)], _oracle(model, prompt, response))
            assert torch.all(logprobs[row, len(response) :] == 0)


def test_response_logprobs_gradient_equals_full_sequence_gradient(tiny_model_dir):
    model = _model(tiny_model_dir)
    rows = [_trajectory(p, r, group=str(i)) for i, (p, r) in enumerate(MIXED)]
    logprobs, mask = response_logprobs(model, rows, pad_id=0)
    (logprobs * mask).sum().backward()
    batched = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    sum(_oracle(model, p, r).sum() for p, r in MIXED if r).backward()
    for name, param in model.named_parameters():
        torch.testing.assert_close(batched[name], param.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_shared_prompt_hidden_states_equal_full_sequences(tiny_model_dir):
    from transformers import AutoModel

    backbone = AutoModel.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    batch = collate_group([_trajectory(PROMPT, r) for r in RESPONSES[:2]], pad_token_id=0)
    with torch.no_grad():
        hidden = shared_prompt_hidden_states(backbone, batch.prompt_ids, batch.response_ids, batch.response_mask)
        assert hidden.shape == (2, 4, backbone.config.hidden_size)
        for row, response in enumerate(RESPONSES[:2]):
            full = backbone(input_ids=torch.tensor([PROMPT + response])).last_hidden_state[0]
            # position P-1+j predicts response token j
            torch.testing.assert_close(hidden[row, : len(response)], full[len(PROMPT) - 1 : -1], rtol=1e-4, atol=1e-5)


def test_response_window_matches_full_logprobs(tiny_model_dir):
    model = _model(tiny_model_dir).eval()
    ids = torch.tensor([PROMPT + [10, 11, 12]])
    with torch.no_grad():
        full = token_logprobs(model, ids, torch.ones_like(ids))
        window = token_logprobs(model, ids, torch.ones_like(ids), start=4)
    torch.testing.assert_close(window[:, 4:], full[:, 4:])
    assert torch.all(window[:, :4] == 0) and window.shape == full.shape == (1, 7)


def test_groups_stay_whole_across_ranks_and_split_by_size():
    trajectories = [_trajectory([1, g], [3], group=f"g{g}") for g in range(3) for _ in range(4)]
    batch = TrainBatch(trajectories=trajectories, version=0, dropped_stale=0)
    shards = [batch.shard(r, 2) for r in range(2)]
    assert [sorted({t.group_id for t in s.trajectories}) for s in shards] == [["g0", "g2"], ["g1"]]
    assert sum(len(s) for s in shards) == 12
    chunks = prompt_groups(trajectories, max_size=3)
    assert [len(c) for c in chunks] == [3, 1, 3, 1, 3, 1]
    assert all(len({tuple(t.prompt_token_ids) for t in c}) == 1 for c in chunks)


def test_auto_dtype_is_float32_without_a_gpu():
    expected = "bfloat16" if torch.cuda.is_available() else "float32"
    assert resolve_dtype("auto") == expected
    assert resolve_dtype("bfloat16") == "bfloat16"
