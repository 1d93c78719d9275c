"""A Bradley-Terry reward model: a transformers sequence-classification model with one
output, read at the last token of prompt + reply. Trained by `recipe=rm`, served by
the Reward service (`reward.functions: [{name: reward_model, path: DIR, weight: W}]`)."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import torch

from rlhf_platform.batching import sequence_batch
from rlhf_platform.devices import role_device, to_device
from rlhf_platform.types import Trajectory


class RewardModel(torch.nn.Module):
    """Scalar score of each sequence from the classification head at its last real token
    (found from the attention mask, so right padding and pad == EOS are both safe)."""

    def __init__(self, classifier: torch.nn.Module) -> None:
        super().__init__()
        if not hasattr(classifier, "score"):
            raise ValueError(f"{type(classifier).__name__} has no `score` head; use a decoder model (Llama, Qwen2, ...)")
        self.classifier = classifier

    @classmethod
    def from_pretrained(cls, model_dir: str | Path) -> "RewardModel":
        """A reward model from a saved one, or a fresh head on a causal LM's backbone."""
        from transformers import AutoModelForSequenceClassification, logging

        verbosity = logging.get_verbosity()
        logging.set_verbosity_error()  # "newly initialized score.weight" is expected from a causal LM
        try:
            model = AutoModelForSequenceClassification.from_pretrained(str(model_dir), num_labels=1, dtype=torch.float32)
        finally:
            logging.set_verbosity(verbosity)
        return cls(model)

    @property
    def vocab_size(self) -> int:
        return int(self.classifier.config.vocab_size)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Scores [B] of right-padded sequences [B, L]."""
        backbone = getattr(self.classifier, self.classifier.base_model_prefix)
        hidden = backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        last = attention_mask.long().sum(-1) - 1
        pooled = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
        head = self.classifier.score  # in the model's dtype (bf16 on a GPU); the score in fp32
        return head(pooled.to(head.weight.dtype)).float().squeeze(-1)

    def save(self, target: str | Path, tokenizer_dir: str | Path) -> Path:
        """Write an HF directory (model, config, the tokenizer of `tokenizer_dir`) to
        `target` atomically: a temp dir beside it, renamed when complete."""
        from transformers import AutoTokenizer

        target = Path(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
        try:
            self.classifier.save_pretrained(tmp)
            AutoTokenizer.from_pretrained(str(tokenizer_dir)).save_pretrained(tmp)
            if target.exists():
                shutil.rmtree(target)
            os.replace(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return target


class RewardModelScorer:
    """Scores trajectories with a saved reward model (the Reward service's `reward_model`).

    It reads the policy's token ids, so the reward model must share the policy's
    tokenizer, as one trained by `recipe=rm` from the same base model does.
    """

    def __init__(self, path: str | Path, batch_size: int = 16, dtype: str = "auto") -> None:
        from rlhf_platform.modeling import pad_token_id, resolve_dtype

        path = Path(path)
        if not (path / "config.json").is_file():
            raise ValueError(f"reward model path {path}: no config.json (train one with recipe=rm)")
        self.path = path
        self.device = role_device()
        self.model = RewardModel.from_pretrained(path).to(self.device, getattr(torch, resolve_dtype(dtype))).eval()
        self.model.requires_grad_(False)
        self.pad_id = pad_token_id(str(path))
        self.batch_size = batch_size

    @torch.no_grad()
    def score(self, trajectories: list[Trajectory]) -> list[float]:
        scores: list[float] = []
        for start in range(0, len(trajectories), self.batch_size):
            chunk = trajectories[start : start + self.batch_size]
            ids, mask = sequence_batch(chunk, self.pad_id)
            if int(ids.max()) >= self.model.vocab_size:
                raise ValueError(
                    f"reward model {self.path}: token id {int(ids.max())} is outside its vocabulary "
                    f"({self.model.vocab_size}); it must share the policy's tokenizer"
                )
            scores.extend(self._scores(ids, mask).tolist())
        return scores

    def _scores(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Scores [B] on the CPU of sequences built on the CPU: the scorer's device boundary."""
        return self.model(*to_device(self.device, ids, mask)).float().cpu()
