"""Rendering task rows into tokenised prompts with the model's chat template."""
from __future__ import annotations

from rlhf_platform.data import DataError, LoadedRows, TaskRow
from rlhf_platform.types import Prompt


class ModelTemplateError(DataError):
    """Chat turns for a model without a chat template: a setup error, never a skippable row."""


def render_text(tokenizer, text: str) -> str:
    """`text` as a user turn in the model's chat template, ending where the assistant reply
    starts (unchanged for a model without a template)."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True, tokenize=False)
    return text


def render_prompt(tokenizer, text: str) -> list[int]:
    """Token ids of `text` as a user turn, ending where the assistant reply starts."""
    return tokenizer(render_text(tokenizer, text), add_special_tokens=False)["input_ids"]


def render_row(tokenizer, row: TaskRow, where: str) -> str:
    """A row's prompt as the model sees it: its chat turns (a messages field, or a system
    prompt) through the chat template with the generation prompt added, else its text as
    one user turn (`render_text`). Chat turns need a template: a model without one is an
    error naming it (no made-up plain-text format), raised whatever task.on_bad_row says."""
    if not row.messages:
        return render_text(tokenizer, row.prompt)
    if not getattr(tokenizer, "chat_template", None):
        model = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
        raise ModelTemplateError(
            f"{where}: the prompt has chat turns ({', '.join(role for role, _ in row.messages)}: from a messages field "
            f"or task.system_prompt), but the model's tokenizer ({model}) has no chat template to render them; "
            "use a model with one (model.path), or plain-text prompts without task.system_prompt"
        )
    turns = [{"role": role, "content": content} for role, content in row.messages]
    try:
        return tokenizer.apply_chat_template(turns, add_generation_prompt=True, tokenize=False)
    except Exception as err:  # the template's own raise_exception (e.g. "roles must alternate")
        model = getattr(tokenizer, "name_or_path", "")
        if turns[0]["role"] == "system" and _renders(tokenizer, turns[1:]):  # a setup error, not a bad row
            raise ModelTemplateError(
                f"{where}: the chat template of {model} refuses system turns ({err}); leave task.system_prompt unset "
                "and give no system messages, or use a model whose template takes them"
            ) from None
        raise DataError(f"{where}: the chat template of {model} refused it ({err})") from None


def _renders(tokenizer, turns: list[dict[str, str]]) -> bool:
    try:
        tokenizer.apply_chat_template(turns, add_generation_prompt=True, tokenize=False)
        return True
    except Exception:
        return False


def tokenize_rows(
    tokenizer, loaded: LoadedRows, max_prompt_tokens: int, on_bad_row: str = "error"
) -> tuple[list[Prompt], int]:
    """Prompts for each row; a prompt the chat template refuses, or longer than
    `max_prompt_tokens`, is an error naming its row, or skipped and counted with
    on_bad_row="skip". Returns (prompts, skipped). `Prompt.text` is the row's text (for
    chat turns, the last user turn), what reward functions get as `prompts`."""
    prompts, skipped = [], 0
    for row in loaded.rows:
        where = f"{row.source or loaded.source}: row {row.line} ({row.prompt_id})"
        try:
            ids = tokenizer(render_row(tokenizer, row, where), add_special_tokens=False)["input_ids"]
            if len(ids) > max_prompt_tokens:
                raise DataError(
                    f"{where}: prompt is {len(ids)} tokens, "
                    f"longer than the {max_prompt_tokens} allowed (model.max_model_len - rollout.max_new_tokens)"
                )
        except ModelTemplateError:
            raise
        except DataError:
            if on_bad_row != "skip":
                raise
            skipped += 1
            continue
        prompts.append(Prompt(row.prompt_id, row.prompt, tuple(ids), row.answer, row.difficulty, row.dataset))
    return prompts, skipped
