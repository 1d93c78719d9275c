"""`rlhf`: the checkpoints and model registry of a run, from the shell.

  rlhf ckpt list                     versions of the run, newest last
  rlhf ckpt show VERSION             lineage, metrics, eval results, files
  rlhf ckpt events                   what the eval gate and divergence watch did, and why
  rlhf ckpt rollback VERSION         make VERSION the run's head (resume and engines start there)
  rlhf registry promote VERSION      mark VERSION promoted (the eval gate's champion)
  rlhf export VERSION --out DIR      the policy of VERSION (or latest) as an HF model directory
  rlhf report RUN_DIR                plots (reward, accuracy, KL, entropy, length, staleness,
                                     rollout/training timeline) and report.md in RUN_DIR/report

The registry is found with `--run DIR` (a run directory), `--registry PATH` (a
registry root or file), or else in the newest run under ./runs. `--run` picks the run
by the id its directory recorded; with `--registry`, `--run` may also be a run id, or
a name: one that several runs of the registry share is an error listing their ids.
Tables by default, `--json` for scripts.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
import uuid
from dataclasses import asdict
from pathlib import Path

from rlhf_platform.checkpoint_dir import CheckpointError, copy_listed_file, verify_checkpoint
from rlhf_platform.config import ConfigError
from rlhf_platform.registry import REGISTRY_FILE, RegistryError, SQLiteRegistry, VersionRecord, recorded_run_id, version_id
from rlhf_platform.report import ReportError
from rlhf_platform.streaming import ReplayError

POLICY_HF = "policy/hf/"  # where a checkpoint holds the policy as an HF model directory


def find_registry(run: str | None, registry: str | None, read_only: bool = False) -> SQLiteRegistry:
    """The registry named by --registry or --run, or that of the newest run in ./runs
    (opened read-only for the commands that only look)."""
    if registry:
        path = Path(registry)
    elif run:
        path = Path(run) / REGISTRY_FILE
    else:
        candidates = sorted(Path("runs").glob(f"*/{REGISTRY_FILE}"), key=lambda p: p.stat().st_mtime)
        if not candidates:
            raise RegistryError("no run with a registry under ./runs; pass --run DIR or --registry PATH")
        path = candidates[-1]
    if path.is_dir():
        path = path / REGISTRY_FILE
    if not path.is_file():
        raise RegistryError(f"{path}: no registry there (a run writes one when it trains)")
    return SQLiteRegistry(path, read_only=read_only)


def _run_id(registry: SQLiteRegistry, args: argparse.Namespace) -> str | None:
    """The id of the run --run names, or None for every run in the registry: the id a run
    directory recorded; else a run id, or a name only one run of the registry has."""
    if not args.run:
        return None
    recorded = recorded_run_id(Path(args.run))
    if recorded is not None:
        return recorded
    name = Path(args.run).name
    ids = registry.run_ids(name)
    if len(ids) > 1:
        raise RegistryError(
            f"--run {args.run}: {len(ids)} runs in {registry.path} are called {name!r} ({', '.join(ids)}); "
            "pass the run directory, or one of these ids"
        )
    return ids[0] if ids else name


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    lines = ["  ".join(str(x).ljust(w) for x, w in zip(row, widths)).rstrip() for row in [header, *rows]]
    return "\n".join(lines)


def _fmt(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def cmd_list(registry: SQLiteRegistry, args: argparse.Namespace) -> str:
    records = registry.versions(_run_id(registry, args))
    if args.json:
        return json.dumps([_summary(r, registry) for r in records], indent=1)
    if not records:
        return f"no versions in {registry.path}"
    heads = {r.run: registry.head(r.run) for r in records}
    rows = [
        [
            ("*" if heads[r.run] == r.id else " ") + str(r.id),
            r.run,
            r.step,
            r.weight_version,
            r.recipe,
            r.status,
            _fmt(r.metrics.get("train/loss", "")),
            _fmt(r.eval.get("accuracy", "")),
            "-" if r.parent is None else r.parent,
            "(removed)" if r.deleted else r.path,
        ]
        for r in records
    ]
    header = ["version", "run", "step", "weights", "recipe", "status", "loss", "eval_acc", "parent", "path"]
    return _table(rows, header) + "\n(* = head of its run: where a resume starts)"


def _summary(record: VersionRecord, registry: SQLiteRegistry) -> dict:
    data = asdict(record)
    data.pop("config")
    data["head"] = registry.head(record.run) == record.id
    return data


def _lineage(registry: SQLiteRegistry, record: VersionRecord) -> list[int]:
    """The version ids from `record` back to its first ancestor (a cycle, which only an
    altered registry holds, ends the walk)."""
    chain, parent = [record.id], record.parent
    while parent is not None and parent not in chain:
        chain.append(parent)
        parent = registry.get(parent).parent
    return chain


def _version_of_run(registry: SQLiteRegistry, args: argparse.Namespace, version: int) -> VersionRecord:
    """Version `version`, refused when --run names another run than the one it belongs to."""
    record = registry.get(version)
    run = _run_id(registry, args)
    if run is not None and record.run != run:
        raise RegistryError(f"version {record.id} belongs to run {record.run!r}, not to --run {args.run} ({run!r})")
    return record


def cmd_show(registry: SQLiteRegistry, args: argparse.Namespace) -> str:
    record = registry.get(args.version)
    lineage = _lineage(registry, record)
    if args.json:
        return json.dumps({**asdict(record), "lineage": lineage, "head": registry.head(record.run) == record.id}, indent=1)
    created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.created))
    lines = [
        f"version {record.id}  ({record.status}{': ' + record.reason if record.reason else ''})",
        f"run {record.run}  recipe {record.recipe}  step {record.step}  weight version {record.weight_version}",
        f"lineage {' <- '.join(map(str, lineage))}",
        f"created {created}  config {record.config_hash[:12]}  checksum {record.checksum[:12]}",
        f"path {record.path}{' (removed by retention)' if record.deleted else ''}",
        f"data position {json.dumps(record.data_position)}",
        "metrics:",
        *(f"  {k} = {_fmt(v)}" for k, v in sorted(record.metrics.items())),
        "eval:" if record.eval else "eval: (not evaluated)",
        *(f"  {k} = {_fmt(v)}" for k, v in sorted(record.eval.items())),
    ]
    return "\n".join(lines)


def cmd_events(registry: SQLiteRegistry, args: argparse.Namespace) -> str:
    events = registry.events(_run_id(registry, args))
    if args.json:
        return json.dumps([asdict(e) for e in events], indent=1)
    if not events:
        return "no rollbacks, stops or rejections recorded"
    rows = [
        [time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e.created)), e.run, e.step, e.kind, "-" if e.version is None else e.version, e.reason]
        for e in events
    ]
    return _table(rows, ["time", "run", "step", "action", "version", "reason"])


def cmd_rollback(registry: SQLiteRegistry, args: argparse.Namespace) -> str:
    record = _version_of_run(registry, args, args.version)
    if record.deleted:
        raise RegistryError(f"version {record.id}: its checkpoint was removed by the retention policy")
    verify_checkpoint(Path(record.path), record.checksum)
    undone = [r for r in registry.versions(record.run) if r.id > record.id and r.status in ("candidate", "promoted")]
    promoted = [str(r.id) for r in undone if r.status == "promoted" and not r.deleted]
    if promoted and not args.force:
        raise RegistryError(
            f"version(s) {', '.join(promoted)} after {record.id} passed the eval gate (promoted); a rollback marks them "
            "rolled_back, and the retention policy may then remove their checkpoints: pass --force to roll back past them"
        )
    for later in undone:
        registry.set_status(later.id, "rolled_back", f"rolled back to version {record.id} by the user")
    registry.set_head(record.run, record.id)
    message = f"version {record.id} (step {record.step}) is now the head of run {record.run}"
    if undone:
        message += f"; marked rolled_back: {', '.join(str(r.id) for r in undone)}"
    return message + f"\nresume it with: rlhf-train ... run.name={registry.run_name(record.run)} resume=latest"


def cmd_promote(registry: SQLiteRegistry, args: argparse.Namespace) -> str:
    record = _version_of_run(registry, args, args.version)
    if record.deleted:
        raise RegistryError(f"version {record.id}: its checkpoint was removed by the retention policy; it cannot be promoted")
    registry.set_status(record.id, "promoted", "promoted by the user")
    return f"version {record.id} of run {record.run} is promoted"


def resolve_version(registry: SQLiteRegistry, args: argparse.Namespace) -> int:
    """The version `args.version` names: an id, or `latest` (the head of --run's run, or
    of the run of the registry's newest version)."""
    if args.version != "latest":
        return version_id(args.version)
    run = _run_id(registry, args)
    if run is None:
        records = registry.versions()
        if not records:
            raise RegistryError(f"latest: no versions in {registry.path}")
        run = records[-1].run
    head = registry.head(run)
    if head is None:
        raise RegistryError(f"latest: run {run!r} has no version in {registry.path}")
    return head


def cmd_export(registry: SQLiteRegistry, args: argparse.Namespace) -> str:
    """Copy the policy files the verified manifest lists into a new directory beside
    --out, then rename it to --out: an export is whole or absent."""
    record = _version_of_run(registry, args, resolve_version(registry, args))
    if record.deleted:
        raise RegistryError(f"version {record.id}: its checkpoint was removed by the retention policy")
    source = Path(record.path)
    manifest = verify_checkpoint(source, record.checksum)
    names = [n for n in manifest.files if n.startswith(POLICY_HF)]
    if not names:
        raise CheckpointError(f"{source}: version {record.id} holds no {POLICY_HF} model to export")
    out = Path(os.path.abspath(args.out))
    if os.path.lexists(out) and (out.is_symlink() or not out.is_dir() or any(out.iterdir())):
        raise RegistryError(f"--out {args.out}: already exists (give a new path or an empty directory)")
    checkpoints = {Path(r.path).resolve().parent for r in registry.versions()}  # the runs' checkpoints folders
    inside = next((c for c in checkpoints if c == out.resolve() or c in out.resolve().parents), None)
    if inside is not None:
        raise RegistryError(
            f"--out {args.out}: inside the checkpoints folder {inside}, where a file the manifest does not list "
            "breaks that checkpoint and retention would delete the export; export somewhere else"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.partial-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    try:
        for name in names:
            target = tmp / name[len(POLICY_HF) :]
            target.parent.mkdir(parents=True, exist_ok=True)
            copy_listed_file(source, name, manifest, target)
        os.rename(tmp, out)  # replaces an empty directory; fails if --out appeared meanwhile
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return f"version {record.id} exported to {args.out} (load it with transformers or model.path={args.out})"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rlhf", description="Checkpoints and the model registry of a run.")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--run", help="run directory (default: the newest under ./runs)")
    common.add_argument("--registry", help="registry root directory or registry.sqlite file")
    common.add_argument("--json", action="store_true", help="machine-readable output")
    groups = parser.add_subparsers(dest="group", required=True)

    ckpt = groups.add_parser("ckpt", help="list, show and roll back checkpoints").add_subparsers(dest="command", required=True)
    ckpt.add_parser("list", parents=[common], help="versions of the run").set_defaults(handler=cmd_list)
    ckpt.add_parser("events", parents=[common], help="rollbacks and stops, with why").set_defaults(handler=cmd_events)
    for name, handler, text in (("show", cmd_show, "one version in full"), ("rollback", cmd_rollback, "make a version the head")):
        sub = ckpt.add_parser(name, parents=[common], help=text)
        sub.add_argument("version", type=int)
        sub.set_defaults(handler=handler, writes=name == "rollback")
        if name == "rollback":
            sub.add_argument("--force", action="store_true", help="roll back past versions the eval gate promoted")

    reg = groups.add_parser("registry", help="promote versions").add_subparsers(dest="command", required=True)
    promote = reg.add_parser("promote", parents=[common], help="mark a version promoted")
    promote.add_argument("version", type=int)
    promote.set_defaults(handler=cmd_promote, writes=True)

    export = groups.add_parser("export", parents=[common], help="write a version's policy as an HF model directory")
    export.add_argument("version", help="a version id, or latest (the run's head: its final model)")
    export.add_argument("--out", required=True, help="target directory (must not exist or be empty)")
    export.set_defaults(handler=cmd_export)

    report = groups.add_parser("report", help="plots and a markdown summary of a run directory")
    report.add_argument("run_dir", help="a run directory written by rlhf-train")
    report.set_defaults(handler=cmd_report, needs_registry=False)

    replay = groups.add_parser("replay", help="re-run a streaming run pinned to its recorded schedule; compare losses")
    replay.add_argument("run_dir", help="a run directory written by rlhf-train with rollout.streaming=true")
    replay.add_argument("--tolerance", type=float, default=1e-4, help="largest per-step loss difference accepted")
    replay.add_argument("--name", help="the replay's run directory name, next to RUN_DIR (default: RUN-replay)")
    replay.set_defaults(handler=cmd_replay, needs_registry=False)
    return parser


def cmd_replay(_registry: None, args: argparse.Namespace) -> str:
    from rlhf_platform.recipes.replay import replay_run

    return replay_run(Path(args.run_dir), args.tolerance, args.name)


def cmd_report(_registry: None, args: argparse.Namespace) -> str:
    from rlhf_platform.report import write_report

    report = write_report(Path(args.run_dir))
    lines = [f"wrote {report.directory / 'report.md'} and {len(report.plots)} plots: {', '.join(report.plots)}"]
    lines += [f"  not drawn: {name} ({why})" for name, why in report.skipped.items()]
    if report.bad_lines:
        lines.append(f"  skipped {len(report.bad_lines)} unreadable metrics.jsonl line(s): {report.bad_lines[:10]}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Entry point of `rlhf`."""
    args = _parser().parse_args(argv)
    try:
        needs_registry, writes = getattr(args, "needs_registry", True), getattr(args, "writes", False)
        registry = find_registry(args.run, args.registry, read_only=not writes) if needs_registry else None
        print(args.handler(registry, args))
    except (RegistryError, CheckpointError, OSError, ReplayError, ConfigError, ReportError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
