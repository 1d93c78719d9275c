"""Rendering task rows into tokenised prompts with the model's chat template."""
from __future__ import annotations

from rlhf_platform.data import DataError, LoadedRows
from rlhf_platform.types import Prompt


def render_text(tokenizer, text: str) -> str:
    """`text` as a user turn in the model's chat template, ending where the assistant reply
    starts (unchanged for a model without a template)."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True, tokenize=False)
    return text


def render_prompt(tokenizer, text: str) -> list[int]:
    """Token ids of `text` as a user turn, ending where the assistant reply starts."""
    return tokenizer(render_text(tokenizer, text), add_special_tokens=False)["input_ids"]


def tokenize_rows(
    tokenizer, loaded: LoadedRows, max_prompt_tokens: int, on_bad_row: str = "error"
) -> tuple[list[Prompt], int]:
    """Prompts for each row; a prompt longer than `max_prompt_tokens` is an error naming
    its row, or skipped and counted with on_bad_row="skip". Returns (prompts, skipped)."""
    prompts, skipped = [], 0
    for row in loaded.rows:
        ids = render_prompt(tokenizer, row.prompt)
        if len(ids) > max_prompt_tokens:
            if on_bad_row == "skip":
                skipped += 1
                continue
            raise DataError(
                f"{loaded.source}: row {row.line} ({row.prompt_id}): prompt is {len(ids)} tokens, "
                f"longer than the {max_prompt_tokens} allowed (model.max_model_len - rollout.max_new_tokens)"
            )
        prompts.append(Prompt(row.prompt_id, row.prompt, tuple(ids), row.answer, row.difficulty))
    return prompts, skipped
