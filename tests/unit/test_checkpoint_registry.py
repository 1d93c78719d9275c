"""Checkpoint directories (atomic, manifest-verified) and the SQLite model registry."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from rlhf_platform.checkpoint_dir import (
    MANIFEST,
    PARTIAL_PREFIX,
    CheckpointError,
    remove_partial,
    verify_checkpoint,
    write_checkpoint,
)
from rlhf_platform.registry import RegistryError, SQLiteRegistry, VersionRecord, champion


def _fill(directory):
    (directory / "hf").mkdir()
    (directory / "hf" / "model.safetensors").write_bytes(b"\x00weights" * 100)
    (directory / "prompt_queue.json").write_text(json.dumps({"ledger": ["a", "b"]}))


def test_checkpoint_is_sealed_by_a_manifest_of_every_file(tmp_path):
    manifest = write_checkpoint(tmp_path / "ckpt", _fill)
    assert sorted(manifest.files) == ["hf/model.safetensors", "prompt_queue.json"]
    assert (tmp_path / "ckpt" / MANIFEST).is_file()
    assert verify_checkpoint(tmp_path / "ckpt").checksum == manifest.checksum
    assert not list(tmp_path.glob(f"{PARTIAL_PREFIX}*"))
    with pytest.raises(CheckpointError, match="already exists"):
        write_checkpoint(tmp_path / "ckpt", _fill)


def test_altered_or_missing_file_is_refused_by_name(tmp_path):
    write_checkpoint(tmp_path / "ckpt", _fill)
    weights = tmp_path / "ckpt" / "hf" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[3] ^= 1  # one flipped bit, same size
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="hf/model.safetensors was altered"):
        verify_checkpoint(tmp_path / "ckpt")
    data[3] ^= 1
    weights.write_bytes(bytes(data))
    verify_checkpoint(tmp_path / "ckpt")
    (tmp_path / "ckpt" / "prompt_queue.json").unlink()
    with pytest.raises(CheckpointError, match="prompt_queue.json listed in the manifest is missing"):
        verify_checkpoint(tmp_path / "ckpt")
    (tmp_path / "ckpt" / MANIFEST).unlink()
    with pytest.raises(CheckpointError, match="no manifest.json"):
        verify_checkpoint(tmp_path / "ckpt")


def test_failed_fill_leaves_nothing(tmp_path):
    def broken(directory):
        _fill(directory)
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_checkpoint(tmp_path / "ckpt", broken)
    assert list(tmp_path.iterdir()) == []


def test_process_killed_mid_save_leaves_no_checkpoint_and_no_registry_row(tmp_path):
    # The save registers only after the rename; kill the process while it fills.
    script = textwrap.dedent(
        f"""
        import os, signal
        from pathlib import Path
        from rlhf_platform.checkpoint_dir import write_checkpoint
        from rlhf_platform.registry import SQLiteRegistry, VersionRecord
        registry = SQLiteRegistry({str(tmp_path)!r})
        def fill(d):
            (d / "hf").mkdir()
            (d / "hf" / "model.safetensors").write_bytes(b"half")
            os.kill(os.getpid(), signal.SIGKILL)
        manifest = write_checkpoint(Path({str(tmp_path)!r}) / "ckpt", fill)
        registry.add(VersionRecord("r", 1, 1, "grpo", "ckpt", manifest.checksum, "h"))
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], timeout=120)
    assert proc.returncode == -9
    assert not (tmp_path / "ckpt").exists()
    assert SQLiteRegistry(tmp_path).versions() == []
    partial = list(tmp_path.glob(f"{PARTIAL_PREFIX}ckpt-*"))
    assert len(partial) == 1
    assert remove_partial(tmp_path) == partial and not partial[0].exists()


def _record(run="r", step=1, **kw):
    return VersionRecord(run, step, step, "grpo", f"/ckpt/{step}", "sum", "cfg", **kw)


def test_registry_records_lineage_status_eval_and_head(tmp_path):
    registry = SQLiteRegistry(tmp_path)
    first = registry.add(_record(step=2, config={"lr": 1e-5}, metrics={"train/loss": 0.5}, data_position={"acked": 16}))
    second = registry.add(_record(step=4, parent=first.id))
    assert (first.id, second.id) == (1, 2)
    assert registry.head("r") == second.id
    loaded = SQLiteRegistry(tmp_path / "registry.sqlite").get(second.id)  # a file path works too
    assert loaded.parent == first.id and loaded.status == "candidate" and not loaded.deleted
    assert registry.get(first.id).config == {"lr": 1e-5} and registry.get(first.id).data_position == {"acked": 16}

    assert champion(registry, "r") is None
    registry.set_eval(first.id, {"accuracy": 0.4})
    registry.set_status(first.id, "promoted", "first version")
    registry.set_status(second.id, "rejected", "accuracy 0.30 < champion 0.40 - 0.02")
    assert champion(registry, "r").id == first.id
    assert registry.get(first.id).eval == {"accuracy": 0.4}
    assert registry.get(second.id).reason.startswith("accuracy")
    registry.set_head("r", first.id)
    assert registry.head("r") == first.id

    registry.add(_record(run="other"))
    assert [r.run for r in registry.versions("r")] == ["r", "r"] and len(registry.versions()) == 3
    with pytest.raises(RegistryError, match="status 'great' is not allowed"):
        registry.set_status(first.id, "great")
    with pytest.raises(RegistryError, match="no version 99"):
        registry.get(99)
    with pytest.raises(RegistryError, match="belongs to run 'other'"):
        registry.set_head("r", 3)


def test_retention_keeps_newest_promoted_and_head(tmp_path):
    from rlhf_platform.config import CheckpointConfig, Config
    from rlhf_platform.recipes.checkpointing import RunCheckpoints

    run_dir = tmp_path / "run"
    registry = SQLiteRegistry(run_dir)
    cfg = Config(checkpoint=CheckpointConfig(every=1, keep_last=2))
    checkpoints = RunCheckpoints(cfg, run_dir, registry)
    paths = []
    for step in range(1, 6):
        path = run_dir / "checkpoints" / f"s{step}"
        path.mkdir(parents=True)
        paths.append(path)
        registry.add(VersionRecord("run", step, step, "grpo", str(path), "sum", "cfg"))
    registry.set_status(2, "promoted")
    registry.set_head("run", 1)  # rolled back to version 1
    assert checkpoints.apply_retention() == [3]
    assert [p.exists() for p in paths] == [True, True, False, True, True]
    assert [r.deleted for r in registry.versions("run")] == [False, False, True, False, False]
