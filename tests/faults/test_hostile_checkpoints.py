"""Hostile checkpoints and registries: files the manifest does not list, symlinks to
host files, manifest names that leave the directory, malformed manifests, garbage
registry files, absurd version numbers and exports onto existing paths are refused by
name (never a traceback, never a half-written export), and two runs with the same
name sharing one registry root never resolve to, or delete, each other's checkpoints."""
from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from types import SimpleNamespace

import pytest

from rlhf_platform.checkpoint_dir import MANIFEST, CheckpointError, verify_checkpoint, write_checkpoint
from rlhf_platform.commands.rlhf import main
from rlhf_platform.config import CheckpointConfig, Config
from rlhf_platform.recipes.checkpointing import CHECKPOINTS, RunCheckpoints, open_registry
from rlhf_platform.registry import RUN_ID_FILE, RegistryError, SQLiteRegistry, VersionRecord


def _fill(directory: Path) -> None:
    (directory / "policy" / "hf").mkdir(parents=True)
    (directory / "policy" / "hf" / "config.json").write_text('{"model_type": "qwen2"}')
    (directory / "policy" / "hf" / "model.safetensors").write_bytes(b"\x00weights" * 100)
    (directory / "prompt_queue.json").write_text("{}")


def _registered(tmp_path: Path) -> tuple[Path, Path]:
    """A run directory with one registered checkpoint (version 1); (run_dir, checkpoint)."""
    run_dir = tmp_path / "run"
    ckpt = run_dir / CHECKPOINTS / "step000001-w000001"
    manifest = write_checkpoint(ckpt, _fill)
    SQLiteRegistry(run_dir).add(VersionRecord("run", 1, 1, "grpo", str(ckpt), manifest.checksum, "cfg"))
    return run_dir, ckpt


def _rlhf(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


def _rewrite_manifest(ckpt: Path, edit) -> None:
    raw = json.loads((ckpt / MANIFEST).read_text())
    edit(raw)
    (ckpt / MANIFEST).write_text(json.dumps(raw))


# -- the checkpoint directory holds exactly what its manifest lists ------------------------


def test_a_file_the_manifest_does_not_list_is_refused_and_not_exported(tmp_path, capsys):
    run_dir, ckpt = _registered(tmp_path)
    (ckpt / "policy" / "hf" / "extra.py").write_text("import os; os.system('id')")
    with pytest.raises(CheckpointError, match="file policy/hf/extra.py is not in the manifest"):
        verify_checkpoint(ckpt)
    code, _, err = _rlhf(capsys, "export", "1", "--run", str(run_dir), "--out", str(tmp_path / "out"))
    assert code == 2 and "policy/hf/extra.py is not in the manifest" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("where", ["policy/hf/tokenizer.json", "policy/hf/config.json", "policy/linked"])
def test_a_symlink_to_a_host_file_is_refused_and_not_exported(tmp_path, capsys, where):
    run_dir, ckpt = _registered(tmp_path)
    host = tmp_path / "host"
    host.mkdir()
    (host / "secret").write_text("host secret")
    link = ckpt / where
    link.unlink(missing_ok=True)  # config.json: a listed file replaced by a link
    link.symlink_to(host if where.endswith("linked") else host / "secret")
    with pytest.raises(CheckpointError, match=f"{where} is a symlink"):
        verify_checkpoint(ckpt)
    code, _, err = _rlhf(capsys, "export", "1", "--run", str(run_dir), "--out", str(tmp_path / "out"))
    assert code == 2 and f"{where} is a symlink" in err
    assert not (tmp_path / "out").exists()


def test_a_save_whose_files_include_a_symlink_fails_and_leaves_nothing(tmp_path):
    def fill(directory):
        _fill(directory)
        (directory / "policy" / "hf" / "vocab.json").symlink_to("/etc/hostname")

    with pytest.raises(CheckpointError, match="policy/hf/vocab.json is a symlink"):
        write_checkpoint(tmp_path / "ckpt", fill)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "name",
    ["../escaped", "policy/../../escaped", "/etc/passwd", "", "./prompt_queue.json", "policy//hf",
     "policy\\..\\..\\escaped", "nul\x00byte", MANIFEST],
)
def test_a_manifest_name_that_is_not_a_plain_relative_path_is_refused(tmp_path, name):
    _, ckpt = _registered(tmp_path)
    (tmp_path / "escaped").write_text("outside")
    digest = "0" * 64
    _rewrite_manifest(ckpt, lambda raw: (raw["files"].__setitem__(name, digest), raw["sizes"].__setitem__(name, 7)))
    with pytest.raises(CheckpointError, match="is not a plain relative path inside the checkpoint"):
        verify_checkpoint(ckpt)


@pytest.mark.parametrize(
    "text, why",
    [
        ("not json {", "unreadable manifest"),
        ("[]", "not a JSON object"),
        ('{"files": {}, "created": 1}', "no 'sizes' key"),
        ('{"files": [], "sizes": {}, "created": 1}', "'files' and 'sizes' must be objects"),
        ('{"files": {"a": "' + "0" * 64 + '"}, "sizes": {}, "created": 1}', "same file names"),
        ('{"files": {"a": "short"}, "sizes": {"a": 1}, "created": 1}', "is not a sha256"),
        ('{"files": {"a": "' + "0" * 64 + '"}, "sizes": {"a": "1"}, "created": 1}', "is not a number of bytes"),
        ('{"files": {"a": "' + "0" * 64 + '"}, "sizes": {"a": -1}, "created": 1}', "is not a number of bytes"),
        ('{"files": {}, "sizes": {}, "created": "yesterday"}', "'created' is not a time"),
        ("[" * 100_000 + "]" * 100_000, "unreadable manifest"),
        (b"\xff\xfe{}", "unreadable manifest"),
    ],
)
def test_a_malformed_manifest_is_refused_by_name(tmp_path, capsys, text, why):
    run_dir, ckpt = _registered(tmp_path)
    manifest = ckpt / MANIFEST
    manifest.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(CheckpointError, match=why) as caught:
        verify_checkpoint(ckpt)
    assert str(manifest) in str(caught.value)
    code, _, err = _rlhf(capsys, "ckpt", "rollback", "1", "--run", str(run_dir))
    assert code == 2 and str(manifest) in err


# -- registries and version numbers ----------------------------------------------------------


def test_a_garbage_registry_file_is_a_clear_error(tmp_path, capsys):
    garbage = tmp_path / "garbage" / "registry.sqlite"
    garbage.parent.mkdir()
    garbage.write_bytes(b"this is not a database" * 100)
    with pytest.raises(RegistryError, match=f"{garbage}: not a usable model registry"):
        SQLiteRegistry(garbage)
    code, _, err = _rlhf(capsys, "ckpt", "list", "--registry", str(garbage))
    assert code == 2 and "not a usable model registry" in err

    other = tmp_path / "other.sqlite"  # a SQLite file of something else
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE versions (x)")
    db.close()
    with pytest.raises(RegistryError, match=f"{other}: table versions has no column run, step"):
        SQLiteRegistry(other)
    code, _, err = _rlhf(capsys, "ckpt", "list", "--registry", str(other))
    assert code == 2 and "table versions has no column" in err

    cfg = Config(checkpoint=CheckpointConfig(registry_root=str(garbage.parent)))
    with pytest.raises(RegistryError, match="not a usable model registry"):  # rlhf-train prints it and exits 2
        open_registry(cfg, tmp_path / "run")


def test_a_registry_row_with_unreadable_fields_is_a_clear_error(tmp_path, capsys):
    run_dir, _ = _registered(tmp_path)
    with sqlite3.connect(run_dir / "registry.sqlite") as db:
        db.execute("UPDATE versions SET metrics = '{not json' WHERE id = 1")
    db.close()
    code, _, err = _rlhf(capsys, "ckpt", "show", "1", "--run", str(run_dir))
    assert code == 2 and "version 1 has an unreadable field" in err


@pytest.mark.parametrize("version", ["99999999999999999999999", "9223372036854775808", "0", "-1", "1.5", "²", "latest!"])
def test_a_huge_negative_or_non_integer_version_is_a_clear_error(tmp_path, capsys, version):
    run_dir, _ = _registered(tmp_path)
    code, _, err = _rlhf(capsys, "export", version, "--run", str(run_dir), "--out", str(tmp_path / "out"))
    assert code == 2 and "not a version id" in err
    assert not (tmp_path / "out").exists()
    registry = SQLiteRegistry(run_dir)
    with pytest.raises(RegistryError, match="not a version id"):
        registry.get(version)
    cfg = Config(checkpoint=CheckpointConfig(every=1))
    with pytest.raises(RegistryError, match="not a version id"):
        RunCheckpoints(cfg, run_dir, registry).resume_version(version)


@pytest.mark.parametrize("version", [10**30, -1, 0, True, 2**63])
def test_the_registry_refuses_a_version_it_cannot_store(tmp_path, capsys, version):
    run_dir, _ = _registered(tmp_path)
    registry = SQLiteRegistry(run_dir)
    for call in (registry.get, registry.mark_deleted, lambda v: registry.set_status(v, "promoted")):
        with pytest.raises(RegistryError, match="not a version id"):
            call(version)
    if version is not True and version >= 0:
        code, _, err = _rlhf(capsys, "ckpt", "show", str(int(version)), "--run", str(run_dir))
        assert code == 2 and "not a version id" in err


# -- exports are whole or absent ---------------------------------------------------------------


def test_export_onto_an_existing_path_is_refused_and_an_export_is_whole_or_absent(tmp_path, capsys, monkeypatch):
    run_dir, _ = _registered(tmp_path)
    existing = tmp_path / "existing.txt"
    existing.write_text("keep me")
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep").write_text("keep me")
    (tmp_path / "link").symlink_to(tmp_path / "empty_target")
    (tmp_path / "empty_target").mkdir()
    for out in (existing, full, tmp_path / "link"):
        code, _, err = _rlhf(capsys, "export", "1", "--run", str(run_dir), "--out", str(out))
        assert code == 2 and f"--out {out}: already exists" in err
    assert existing.read_text() == "keep me" and (full / "keep").read_text() == "keep me"
    assert list((tmp_path / "empty_target").iterdir()) == []

    from rlhf_platform.commands import rlhf

    copied, copy = [], rlhf.copy_listed_file

    def copy_then_fail(directory, name, manifest, target):  # the disk fills up half-way
        if copied:
            raise OSError(28, "No space left on device", str(target))
        copied.append(target)
        return copy(directory, name, manifest, target)

    monkeypatch.setattr(rlhf, "copy_listed_file", copy_then_fail)
    code, _, err = _rlhf(capsys, "export", "1", "--run", str(run_dir), "--out", str(tmp_path / "half"))
    assert code == 2 and "No space left on device" in err
    assert not (tmp_path / "half").exists() and not list(tmp_path.glob(".half*"))
    monkeypatch.undo()

    empty = tmp_path / "empty"
    empty.mkdir()
    for out in (tmp_path / "new" / "model", empty):
        code, out_text, err = _rlhf(capsys, "export", "1", "--run", str(run_dir), "--out", str(out))
        assert code == 0, err
        assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    assert not list(tmp_path.rglob(".*partial*"))


# -- runs are keyed by a unique id ----------------------------------------------------------


class _Policy:
    """The rank group's save_state: writes an HF directory and a state file."""

    def start(self, method, path):
        assert method == "save_state"
        (Path(path) / "hf").mkdir(parents=True)
        (Path(path) / "hf" / "config.json").write_text("{}")
        (Path(path) / "state.pt").write_bytes(path.encode())
        return []


def _roles():
    return SimpleNamespace(policy=_Policy(), critic=None, queue=None, builder=None, executor=SimpleNamespace(get_all=lambda refs: []))


def _run(root: Path, shared: Path) -> RunCheckpoints:
    cfg = Config(checkpoint=CheckpointConfig(every=1, keep_last=1, registry_root=str(shared)))
    run_dir = root / "foo"
    run_dir.mkdir(parents=True, exist_ok=True)
    return RunCheckpoints(cfg, run_dir, open_registry(cfg, run_dir))


def test_two_runs_with_one_name_sharing_a_registry_never_touch_each_others_checkpoints(tmp_path, capsys):
    shared = tmp_path / "shared"
    a, b = _run(tmp_path / "a", shared), _run(tmp_path / "b", shared)
    assert a.run == "foo" and b.run.startswith("foo-") and a.run != b.run
    assert (tmp_path / "a" / "foo" / RUN_ID_FILE).read_text().strip() == a.run

    a_saved = [a.save(_roles(), step, step, {}) for step in (1, 2, 3)]
    b_saved = [b.save(_roles(), 1, 1, {})]
    a_saved.append(a.save(_roles(), 4, 4, {}))  # a's retention runs again: b's version 1 stays
    b_saved.append(b.save(_roles(), 2, 2, {}))  # and b's: a's head stays
    assert [Path(r.path).exists() for r in a_saved] == [False, False, False, True]
    assert [Path(r.path).exists() for r in b_saved] == [False, True]
    assert all(tmp_path / "a" / "foo" in Path(r.path).parents for r in a_saved)
    assert all(tmp_path / "b" / "foo" in Path(r.path).parents for r in b_saved)

    # each resolves to its own checkpoints, also when it resumes in a new process
    a_again, b_again = _run(tmp_path / "a", shared), _run(tmp_path / "b", shared)
    assert (a_again.run, b_again.run) == (a.run, b.run)
    assert a_again.resume_version("latest") == a_saved[-1].id
    assert b_again.resume_version("latest") == b_saved[-1].id
    with pytest.raises(CheckpointError, match=f"belongs to run {b.run!r}, not 'foo'"):
        a_again.resume_version(str(b_saved[-1].id))

    # the CLI: a run directory names its own run; the bare shared name is ambiguous
    code, out, err = _rlhf(capsys, "ckpt", "list", "--registry", str(shared), "--run", str(tmp_path / "b" / "foo"), "--json")
    assert code == 0 and [(v["id"], v["run"]) for v in json.loads(out)] == [(r.id, b.run) for r in b_saved]
    code, _, err = _rlhf(capsys, "export", "latest", "--registry", str(shared), "--run", "foo", "--out", str(tmp_path / "x"))
    assert code == 2 and f"2 runs in {shared / 'registry.sqlite'} are called 'foo' (foo, {b.run})" in err
    code, out, err = _rlhf(capsys, "export", "latest", "--registry", str(shared), "--run", b.run, "--out", str(tmp_path / "x"))
    assert code == 0 and f"version {b_saved[-1].id} exported" in out, err
    code, out, err = _rlhf(capsys, "ckpt", "rollback", str(b_saved[-1].id), "--registry", str(shared))
    assert code == 0 and f"head of run {b.run}" in out and "run.name=foo " in out


def test_retention_never_removes_a_directory_outside_the_runs_checkpoints(tmp_path):
    shared = tmp_path / "shared"
    run = _run(tmp_path / "a", shared)
    host = tmp_path / "host_dir"
    host.mkdir()
    (host / "data").write_text("precious")
    run.registry.add(VersionRecord(run.run, 1, 1, "grpo", str(host), "sum", "cfg"))  # a forged row
    run.save(_roles(), 2, 2, {})
    run.save(_roles(), 3, 3, {})
    assert (host / "data").read_text() == "precious"


def test_a_run_directory_from_before_run_ids_keeps_its_checkpoints(tmp_path):
    run_dir, ckpt = _registered(tmp_path)  # run "run", registered under its name, no run_id file
    with sqlite3.connect(run_dir / "registry.sqlite") as db:
        db.execute("DROP TABLE runs")  # the registry as the code before run ids wrote it
    db.close()
    assert not (run_dir / RUN_ID_FILE).exists()
    cfg = Config(checkpoint=CheckpointConfig(every=1))
    checkpoints = RunCheckpoints(cfg, run_dir, SQLiteRegistry(run_dir))
    assert checkpoints.run == "run" and checkpoints.resume_version("latest") == 1
    assert (run_dir / RUN_ID_FILE).read_text().strip() == "run"


# -- second pass: what a hostile reviewer found beyond the first -----------------------------


def _reseal(ckpt: Path) -> None:
    """Rewrite the manifest to match the directory as it is now (what a tamperer does)."""
    from dataclasses import asdict

    from rlhf_platform.checkpoint_dir import _manifest_of

    (ckpt / MANIFEST).write_text(json.dumps(asdict(_manifest_of(ckpt))))


def test_a_checkpoint_whose_manifest_was_rewritten_is_refused_everywhere(tmp_path, capsys):
    run_dir, ckpt = _registered(tmp_path)
    (ckpt / "policy" / "hf" / "model.safetensors").write_bytes(b"other weights")
    (ckpt / "policy" / "hf" / "evil.py").write_text("import os")
    _reseal(ckpt)
    verify_checkpoint(ckpt)  # consistent with itself ...
    record = SQLiteRegistry(run_dir).get(1)
    with pytest.raises(CheckpointError, match="not the one the registry recorded"):
        verify_checkpoint(ckpt, record.checksum)  # ... but not the checkpoint that was saved
    for argv in (["export", "1", "--out", str(tmp_path / "out")], ["ckpt", "rollback", "1"]):
        code, _, err = _rlhf(capsys, *argv, "--run", str(run_dir))
        assert code == 2 and "not the one the registry recorded" in err, argv
    assert not (tmp_path / "out").exists()
    checkpoints = RunCheckpoints(Config(checkpoint=CheckpointConfig(every=1)), run_dir, SQLiteRegistry(run_dir))
    with pytest.raises(CheckpointError, match="not the one the registry recorded"):
        checkpoints.resume_version("latest")


def test_the_checksum_of_a_manifest_cannot_collide_through_file_names():
    from rlhf_platform.checkpoint_dir import Manifest

    one, two = "1" * 64, "2" * 64
    plain = Manifest({"a": one, "b": two}, {"a": 1, "b": 1})
    forged = Manifest({f"a {one}\nb": two}, {f"a {one}\nb": 1})
    assert plain.checksum != forged.checksum
    assert not forged.matches(plain.checksum)


def test_a_copied_run_directory_cannot_continue_the_original_run(tmp_path):
    import shutil

    shared = tmp_path / "shared"
    original = _run(tmp_path / "a", shared)
    original.save(_roles(), 1, 1, {})
    shutil.copytree(tmp_path / "a" / "foo", tmp_path / "b" / "foo")  # its run_id file too
    with pytest.raises(RegistryError, match="a copied run directory cannot continue another run"):
        _run(tmp_path / "b", shared)
    (tmp_path / "b" / "foo" / RUN_ID_FILE).unlink()  # as the message says: a new run
    shutil.rmtree(tmp_path / "b" / "foo" / CHECKPOINTS)
    copy = _run(tmp_path / "b", shared)
    assert copy.run != original.run
    with pytest.raises(CheckpointError, match="has no checkpoint"):
        copy.resume_version("latest")
    # a run directory that was moved (the original is gone) goes on as the same run
    (tmp_path / "a" / "foo").rename(tmp_path / "moved")
    moved = RunCheckpoints(original.cfg, tmp_path / "moved", open_registry(original.cfg, tmp_path / "moved"))
    assert moved.run == original.run


def test_a_copied_run_directory_holding_its_own_registry_is_a_fork(tmp_path):
    """Without a shared registry root the registry is copied with the run: the copy resumes
    from its copy of the registry, and its retention never touches the original's files."""
    import shutil

    cfg = Config(checkpoint=CheckpointConfig(every=1, keep_last=1))
    original = RunCheckpoints(cfg, tmp_path / "a", open_registry(cfg, tmp_path / "a"))
    kept = original.save(_roles(), 1, 1, {})
    shutil.copytree(tmp_path / "a", tmp_path / "fork")
    fork = RunCheckpoints(cfg, tmp_path / "fork", open_registry(cfg, tmp_path / "fork"))
    assert fork.resume_version("latest") == kept.id
    fork.save(_roles(), 2, 2, {})
    fork.save(_roles(), 3, 3, {})
    assert Path(kept.path).is_dir()  # the original's checkpoint, registered in the fork's copy too


def test_a_registry_from_before_run_directories_were_kept_is_upgraded(tmp_path):
    run_dir, _ = _registered(tmp_path)
    with sqlite3.connect(run_dir / "registry.sqlite") as db:
        db.execute("DROP TABLE runs")
        db.execute("CREATE TABLE runs (id TEXT PRIMARY KEY, name TEXT, created REAL)")
    db.close()
    checkpoints = RunCheckpoints(Config(checkpoint=CheckpointConfig(every=1)), run_dir, SQLiteRegistry(run_dir))
    assert checkpoints.resume_version("latest") == 1


def test_an_export_into_a_checkpoints_folder_is_refused(tmp_path, capsys):
    run_dir, ckpt = _registered(tmp_path)
    for out in (ckpt / "exported", run_dir / CHECKPOINTS / "step000009-w000009"):
        code, _, err = _rlhf(capsys, "export", "1", "--run", str(run_dir), "--out", str(out))
        assert code == 2 and "inside the checkpoints folder" in err
    verify_checkpoint(ckpt)  # still whole


def test_a_file_swapped_after_the_check_is_not_exported(tmp_path, capsys, monkeypatch):
    from rlhf_platform.commands import rlhf

    run_dir, ckpt = _registered(tmp_path)
    host = tmp_path / "host_secret"
    host.write_text("secret")
    verify = rlhf.verify_checkpoint

    def verify_then_swap(directory, checksum=None):  # a concurrent writer, right after the check
        manifest = verify(directory, checksum)
        (ckpt / "policy" / "hf" / "config.json").unlink()
        (ckpt / "policy" / "hf" / "config.json").symlink_to(host)
        return manifest

    monkeypatch.setattr(rlhf, "verify_checkpoint", verify_then_swap)
    code, _, err = _rlhf(capsys, "export", "1", "--run", str(run_dir), "--out", str(tmp_path / "out"))
    assert code == 2 and "config.json" in err
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))


def _two_runs(tmp_path: Path) -> tuple[Path, Path, Path]:
    """Runs a and b sharing one registry; b has versions 2 and 3, a has version 1."""
    shared = tmp_path / "shared"
    a, b = _run(tmp_path / "a", shared), _run(tmp_path / "b", shared)
    a.save(_roles(), 1, 1, {})
    b.save(_roles(), 1, 1, {})
    b.save(_roles(), 2, 2, {})
    return shared, tmp_path / "a" / "foo", tmp_path / "b" / "foo"


@pytest.mark.parametrize("argv", [["ckpt", "rollback", "2"], ["registry", "promote", "3"], ["export", "3", "--out", "x"]])
def test_a_command_naming_a_version_of_another_run_is_refused(tmp_path, capsys, argv):
    shared, a_dir, _ = _two_runs(tmp_path)
    registry = SQLiteRegistry(shared)
    before = [(r.id, r.status) for r in registry.versions()], registry.head(registry.get(3).run)
    code, _, err = _rlhf(capsys, *argv, "--registry", str(shared), "--run", str(a_dir))
    assert code == 2 and "belongs to run" in err and "not to --run" in err
    assert ([(r.id, r.status) for r in registry.versions()], registry.head(registry.get(3).run)) == before


def test_a_rollback_past_a_promoted_version_needs_force_and_a_removed_version_cannot_be_promoted(tmp_path, capsys):
    run_dir, _ = _registered(tmp_path)
    registry = SQLiteRegistry(run_dir)
    for step in (2, 3):
        ckpt = run_dir / CHECKPOINTS / f"step{step:06d}-w{step:06d}"
        registry.add(VersionRecord("run", step, step, "grpo", str(ckpt), write_checkpoint(ckpt, _fill).checksum, "cfg"))
    registry.set_status(3, "promoted", "gate")
    code, _, err = _rlhf(capsys, "ckpt", "rollback", "2", "--run", str(run_dir))
    assert code == 2 and "version(s) 3 after 2 passed the eval gate" in err and "--force" in err
    assert registry.get(3).status == "promoted" and registry.head("run") == 3
    code, out, _ = _rlhf(capsys, "ckpt", "rollback", "2", "--force", "--run", str(run_dir))
    assert code == 0 and registry.get(3).status == "rolled_back" and registry.head("run") == 2
    registry.mark_deleted(1)
    code, _, err = _rlhf(capsys, "registry", "promote", "1", "--run", str(run_dir))
    assert code == 2 and "cannot be promoted" in err


@pytest.mark.parametrize(
    "table,column,value,command",
    [
        ("versions", "metrics", "[1, 2]", ["ckpt", "list"]),
        ("versions", "eval", "5", ["ckpt", "list"]),
        ("versions", "created", "x", ["ckpt", "show", "1"]),
        ("versions", "created", 1e300, ["ckpt", "show", "1"]),
        ("versions", "path", None, ["export", "1", "--out", "out"]),
        ("versions", "step", "x", ["ckpt", "list"]),
        ("versions", "status", "bogus", ["ckpt", "list", "--json"]),
        ("events", "created", "x", ["ckpt", "events"]),
        ("heads", "version", "x", ["export", "latest", "--out", "out"]),
    ],
)
def test_a_registry_row_of_the_wrong_kind_is_a_clear_error(tmp_path, capsys, table, column, value, command):
    from rlhf_platform.registry import Event

    run_dir, _ = _registered(tmp_path)
    SQLiteRegistry(run_dir).log_event(Event("run", 1, "rollback", "test", 1))
    with sqlite3.connect(run_dir / "registry.sqlite") as db:
        db.execute(f"UPDATE {table} SET {column} = ?", (value,))
    db.close()
    code, _, err = _rlhf(capsys, *command, "--run", str(run_dir))
    assert code == 2 and "the registry was altered" in err


def test_a_lineage_cycle_ends_the_walk(tmp_path, capsys):
    run_dir, _ = _registered(tmp_path)
    with sqlite3.connect(run_dir / "registry.sqlite") as db:
        db.execute("UPDATE versions SET parent = id")
    db.close()
    code, out, _ = _rlhf(capsys, "ckpt", "show", "1", "--run", str(run_dir))
    assert code == 0 and "lineage 1\n" in out


def test_commands_that_only_look_never_write_to_the_registry_file(tmp_path, capsys):
    foreign = tmp_path / "app.sqlite"
    with sqlite3.connect(foreign) as db:
        db.execute("CREATE TABLE users (name TEXT)")
    db.close()
    empty = tmp_path / "empty.sqlite"
    empty.write_bytes(b"")
    for path in (foreign, empty):
        for command in (["ckpt", "list"], ["ckpt", "events"], ["ckpt", "show", "1"]):
            code, _, err = _rlhf(capsys, *command, "--registry", str(path))
            assert code == 2 and "not a model registry" in err
    with sqlite3.connect(foreign) as db:
        assert [r[0] for r in db.execute("SELECT name FROM sqlite_master")] == ["users"]
    db.close()
    assert empty.stat().st_size == 0
    with pytest.raises(RegistryError, match="not a model registry"):  # a writer refuses it too
        SQLiteRegistry(foreign)


def test_a_failed_registration_leaves_no_orphan_checkpoint(tmp_path):
    shared = tmp_path / "shared"
    run = _run(tmp_path / "a", shared)

    def locked(record):
        raise RegistryError("database is locked")

    run.registry.add = locked
    with pytest.raises(RegistryError):
        run.save(_roles(), 1, 1, {})
    checkpoints = tmp_path / "a" / "foo" / CHECKPOINTS
    assert [p.name for p in checkpoints.iterdir()] == [".partial-step000001-w000001-unregistered"]
    again = _run(tmp_path / "a", shared)  # the next process removes it
    assert list(checkpoints.iterdir()) == []
    assert again.save(_roles(), 1, 1, {}).path.endswith("step000001-w000001")


def test_a_resume_by_another_recipe_or_with_other_data_keys_is_refused(tmp_path):
    shared = tmp_path / "shared"
    run = _run(tmp_path / "a", shared)
    run.save(_roles(), 1, 1, {})

    def resumed(**sections):
        cfg = Config(checkpoint=CheckpointConfig(every=1, keep_last=1, registry_root=str(shared)), **sections)
        return RunCheckpoints(cfg, tmp_path / "a" / "foo", open_registry(cfg, tmp_path / "a" / "foo"))

    from rlhf_platform.config import AlgoConfig, RunConfig, TaskConfig

    assert resumed().resume_version("latest") == 1
    with pytest.raises(CheckpointError, match="saved by a recipe=grpo run; this run is recipe=rm"):
        resumed(algo=AlgoConfig(name="rm")).resume_version("latest")
    with pytest.raises(CheckpointError, match="run.seed was 0 and is now 1"):
        resumed(run=RunConfig(seed=1)).resume_version("latest")
    with pytest.raises(CheckpointError, match="task.train_size was 2000 and is now 17"):
        resumed(task=TaskConfig(train_size=17)).resume_version("latest")


@pytest.mark.parametrize(
    "saved,why",
    [({"step": 1, "weight_version": 1, "extra": 1}, "not a run state"), ({"step": "1", "weight_version": 1}, "not a run state"),
     ({"step": 1, "weight_version": 1, "lr_scale": float("nan")}, "not in")],
)
def test_a_run_state_of_the_wrong_shape_is_a_checkpoint_error(saved, why):
    from rlhf_platform.recipes.checkpointing import RunState

    with pytest.raises(CheckpointError, match=why):
        RunState.from_saved(saved, Path("ckpt/run_state.json"))


@pytest.mark.parametrize("state", [{"fingerprint": "x"}, [1], {"fingerprint": "x", "pairs": [{"a": 1}], "extra": {}}])
def test_a_recipe_state_of_the_wrong_shape_is_a_checkpoint_error(state):
    from rlhf_platform.recipes.pair_training import resumed_pairs

    with pytest.raises(CheckpointError, match="recipe state|saved pairs are unreadable"):
        resumed_pairs(state if isinstance(state, dict) else {"state": state}, None, 3)
