"""End to end through real Ray, the real vLLM CPU engine and real DeepSpeed ZeRO."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import ray

from support import rlhf, run_cli, small_cfg, wandb_offline_history

def run_listens_on_loopback_only() -> bool:
    """True when every listening TCP socket of this process and its descendants (Ray's
    daemons and the run's actors) is on a loopback address; else fails naming them."""
    import ipaddress
    import os

    import psutil

    pids = {p.pid for p in psutil.Process().children(recursive=True)} | {os.getpid()}
    listening = [(c.laddr.ip, c.laddr.port, psutil.Process(c.pid).name()) for c in psutil.net_connections(kind="tcp")
                 if c.status == psutil.CONN_LISTEN and c.pid in pids]
    def loopback(ip: str) -> bool:
        address = ipaddress.ip_address(ip)
        return (getattr(address, "ipv4_mapped", None) or address).is_loopback

    outside = [entry for entry in listening if not loopback(entry[0])]
    assert listening and not outside, outside
    return True

pytestmark = pytest.mark.e2e


def test_async_grpo_two_ranks(ray_local, tmp_path, tiny_model_dir, tiny_tokenizer):
    from rlhf_platform.data import task_rows
    from rlhf_platform.prompts import tokenize_rows
    from rlhf_platform.recipes import online_rl
    from rlhf_platform.recipes.run_roles import start_roles
    from rlhf_platform.roles.ray_executor import RayExecutor

    # The brevity reward differs within a group even for the untrained tiny model, so
    # advantages (and the update) are never all zero, whatever the samples are.
    cfg = small_cfg(
        "cluster=local_2ranks", "trainer.max_steps=3", "rollout.max_staleness=1", "algo.kl.coef=0.01",
        "reward.functions=[{name:brevity,weight:1.0}]", "algo.ppo_epochs=2", "algo.mini_batches=2",
    )
    train_rows, _ = task_rows(cfg.task, 0, tmp_path)
    prompts, _ = tokenize_rows(tiny_tokenizer, train_rows, 200)
    roles = start_roles(RayExecutor(cfg.ray), cfg, tiny_model_dir, prompts)
    try:
        assert roles.policy.world_size == 2 and roles.reference is not None
        before = roles.policy.run("weights_digest")
        assert before[0] == before[1]
        stats, versions = online_rl.train(roles, cfg)
        # Every server of the run (Ray's, the ranks' rendezvous store and gloo pairs) listens on loopback only.
        assert run_listens_on_loopback_only()
        after = roles.policy.run("weights_digest")
        # Weights changed, identically on both data-parallel ranks.
        assert after[0] == after[1] != before[0]
        # Between batches the engine switches to the newest published version.
        engine = roles.engines[0]
        assert engine.served_version().result() < 3
        assert engine.sync(versions.trained).result() == versions.trained == 3
        assert engine.served_version().result() == 3
        assert roles.bus.served().result() == {"rollout-0": 3}
        # Every trajectory carries the version that generated it, at most one behind.
        assert stats.steps == 3 and stats.samples == 3 * 16
        for step, versions in enumerate(stats.versions_trained):
            assert len(versions) == 16
            assert all(0 <= step - v <= 1 for v in versions)
        # Asynchrony: later batches were generated while the step before trained.
        assert any(step - v == 1 for step, vs in enumerate(stats.versions_trained) for v in vs)
        assert all("train/kl_ref" in h for h in stats.history)
        # 2 epochs x 2 mini-batches (one group per rank each): four optimizer steps a
        # step, every rank in step (the weights above agree), pi_old of the step's start.
        assert all(h["train/optimizer_steps"] == 4 and h["train/epochs"] == 2 for h in stats.history)
        assert any(h["train/epoch1/ratio_max"] > 1.0 for h in stats.history)
        ledger = roles.queue.get_ledger().result()
        assert len(ledger) == 3 * 4
        # The dashboard's actor list reads like the architecture ...
        names = set(ray.util.list_named_actors())
        expected = {"weight-bus", "prompt-queue", "rollout-0", "reward", "reference", "advantage-builder", "trainer-rank0", "trainer-rank1"}
        assert expected <= names, expected - names
        # ... and each role's metrics reach Ray's Prometheus endpoint, tagged with the role.
        samples = scrape_ray_metrics(
            {
                ("rlhf_rollout_tokens_per_second", "rollout-0"),
                ("rlhf_weight_version_served", "rollout-0"),
                ("rlhf_queue_depth", "prompt-queue"),
                ("rlhf_sample_staleness_count", "advantage-builder"),
                ("rlhf_reward_mean", "reward"),
                ("rlhf_step_seconds", "driver"),
                ("rlhf_train_step", "driver"),
                ("rlhf_policy_update", "driver"),  # clip fractions, ratios, IS weights, mismatch KL
            },
            settled={("rlhf_train_step", "driver"): 3, ("rlhf_sample_staleness_count", "advantage-builder"): 3 * 16},
        )
        assert samples[("rlhf_train_step", "driver")] == 3
        assert samples[("rlhf_sample_staleness_count", "advantage-builder")] == 3 * 16
        assert samples[("rlhf_rollout_tokens_per_second", "rollout-0")] > 0
        assert 0 <= samples[("rlhf_weight_version_served", "rollout-0")] <= 3
    finally:
        roles.shutdown()


def scrape_ray_metrics(
    wanted: set[tuple[str, str]], settled: dict[tuple[str, str], float] | None = None, timeout_s: float = 90.0
) -> dict[tuple[str, str], float]:
    """Read Ray's Prometheus endpoint on every node (127.0.0.1 here) until each
    (metric, role) in `wanted` has a sample and each in `settled` has reached its value
    (exports are periodic, so an early read may hold an older value); return the last
    value of each."""
    settled = settled or {}
    import re
    import time
    import urllib.request

    line = re.compile(r'^ray_(rlhf_\w+)\{(.*)\} (\S+)$')
    deadline = time.monotonic() + timeout_s
    while True:
        found: dict[tuple[str, str], float] = {}
        for node in ray.nodes():
            if node["Alive"]:
                url = f"http://127.0.0.1:{node['MetricsExportPort']}/metrics"
                for text in urllib.request.urlopen(url, timeout=10).read().decode().splitlines():
                    match = line.match(text)
                    role = match and re.search(r'role="([^"]+)"', match.group(2))
                    if role:
                        found[(match.group(1), role.group(1))] = float(match.group(3))
        done = wanted <= found.keys() and all(found.get(key) == value for key, value in settled.items())
        if done or time.monotonic() > deadline:
            assert wanted <= found.keys(), f"missing from Ray's metrics endpoint: {wanted - found.keys()}"
            return found
        time.sleep(2)


def test_rlhf_train_cli_synchronous(tmp_path):
    """`rlhf-train` on the tiny model with max_staleness=0: summary.json, no stale sample,
    and every metric in wandb's offline run with its step (what `wandb sync` uploads)."""
    summary, steps = run_cli(tmp_path, "sync", "trainer.max_steps=2", "rollout.max_staleness=0", "logger.backend=wandb")
    for key in ("eval_accuracy_before", "eval_accuracy_after", "steps", "samples", "dropped_stale", "wall_time_s"):
        assert key in summary
    assert summary["steps"] == 2 and summary["samples"] == 32 and summary["dropped_stale"] == 0
    assert len(steps) == 2 and all(m["rollout/staleness_max"] == 0 for m in steps)
    rows, config = wandb_offline_history(tmp_path / "sync")
    logged = {row["_step"]: row for row in rows}
    for metrics in steps:
        row = logged[metrics["step"]]
        for key in ("train/loss", "rollout/reward_mean", "time/train_seconds", "weight_version"):
            assert row[key] == pytest.approx(metrics[key]), key
    assert "eval/accuracy" in logged[0] and "eval/accuracy" in logged[2]  # before and after training
    assert config["trainer"]["max_steps"] == 2 and config["rollout"]["max_staleness"] == 0
    # `rlhf report` on the run directory: the plots, and a summary that says the run was synchronous
    code, out, err = rlhf(tmp_path, "report", str(tmp_path / "sync"))
    assert code == 0, err
    report = tmp_path / "sync" / "report"
    for plot in ("reward", "accuracy", "kl", "entropy", "response_length", "staleness", "timeline"):
        assert (report / f"{plot}.png").read_bytes()[:4] == b"\x89PNG", plot
    assert "rollout/training overlap: 0% of training time" in (report / "report.md").read_text()
    check_final_model_is_registered_and_exports(tmp_path, tmp_path / "sync", summary)


VLLM_LOADS = """
import sys
from rlhf_platform.roles.vllm_backend import VLLMBackend
from rlhf_platform.sampling import SamplingSpec
backend = VLLMBackend(sys.argv[1], max_model_len=256)
samples = backend.generate([[2, 5, 6, 7]], SamplingSpec(n=1, temperature=0.0, max_new_tokens=4))
print("vllm generated", len(samples[0][0].token_ids), "tokens")
"""


def check_final_model_is_registered_and_exports(tmp_path, run_dir, summary) -> None:
    """A run keeps what it trained: its final model is the registry's head, and
    `rlhf export latest` writes it as a directory transformers and vLLM both load."""
    import sys

    from transformers import AutoModelForCausalLM

    from support import run_in_own_session

    code, out, err = rlhf(tmp_path, "ckpt", "list", "--run", str(run_dir), "--json")
    assert code == 0, err
    (final,) = json.loads(out)
    assert final["id"] == summary["final_version"] and final["head"] and final["step"] == summary["steps"]
    assert final["eval"]["accuracy"] == summary["eval_accuracy_after"]
    exported = tmp_path / "final_model"
    code, out, err = rlhf(tmp_path, "export", "latest", "--run", str(run_dir), "--out", str(exported))
    assert code == 0 and f"version {final['id']} exported" in out, err
    AutoModelForCausalLM.from_pretrained(exported)
    code, out, err = run_in_own_session([sys.executable, "-c", VLLM_LOADS, str(exported)], tmp_path / "vllm", 600)
    assert code == 0 and "vllm generated" in out, err[-3000:]

def test_dapo_and_gspo_recipes_run(tmp_path):
    """recipe=dapo (dynamic sampling, overlong penalty, clip-higher; its scheduler is
    tested in process, so here too) and recipe=gspo (sequence-level ratio, here training
    LoRA adapters whose merged weights the vLLM engine loads) through the real stack. The
    brevity reward gives the untrained tiny model rewards that differ within a group."""
    common = ["trainer.max_steps=2", "eval.before=false", "reward.functions=[{name:brevity,weight:1.0}]"]
    summary, steps = run_cli(
        tmp_path, "dapo", "recipe=dapo", "algo.dapo.overlong_buffer=4", "executor=inprocess", "rollout.backend=hf", *common
    )
    assert summary["recipe"] == "dapo" and summary["steps"] == 2 and len(steps) == 2
    for m in steps:
        assert "rollout/dropped_uniform_groups" in m and "rollout/sampling_rounds" in m
        assert -1.0 <= m["rollout/overlong_penalty_mean"] <= 0.0
        assert m["train/grad_norm"] > 0
    summary, steps = run_cli(
        tmp_path, "gspo", "recipe=gspo", "model.lora.enabled=true", "model.lora.rank=4", *EPOCHS_2X2, *common
    )
    assert summary["recipe"] == "gspo" and summary["steps"] == 2
    assert all(m["train/grad_norm"] > 0 and 0.0 <= m["train/clip_fraction"] <= 1.0 for m in steps)
    assert_the_clip_acts(steps)


EPOCHS_2X2 = ("algo.ppo_epochs=2", "algo.mini_batches=2")


def assert_the_clip_acts(steps: list[dict]) -> None:
    """With 2 epochs x 2 mini-batches the ratio pi / pi_old moves away from 1 after the
    first optimizer step, and the clip is active on some tokens (sequences for GSPO)."""
    for m in steps:
        assert m["train/optimizer_steps"] == 4 and m["train/epochs"] == 2
        assert m["train/epoch1/ratio_max"] > 1.0 and abs(m["train/epoch1/ratio_mean"] - 1.0) > 1e-6
        assert m["train/clip_fraction"] > 0 and m["train/epoch1/clip_fraction"] > 0
        assert m["train/clip_fraction"] == pytest.approx(m["train/clip_fraction_low"] + m["train/clip_fraction_high"])


def test_ppo_recipe_trains_policy_and_critic(tmp_path):
    """recipe=ppo: the Critic role's values feed GAE, the KL to the reference is a
    per-token reward penalty steered by the adaptive controller, both models step."""
    summary, steps = run_cli(
        tmp_path, "ppo", "recipe=ppo", "trainer.max_steps=2", "eval.before=false", "critic.lr=1e-3",
        "algo.kl.target=0.5", "algo.policy.entropy_coef=0.01", "reward.functions=[{name:brevity,weight:1.0}]",
        "checkpoint.every=1", *EPOCHS_2X2,
    )
    assert summary["recipe"] == "ppo" and summary["steps"] == 2 and summary["samples"] == 2 * 4 * 4
    for m in steps:
        assert m["train/grad_norm"] > 0 and m["critic/grad_norm"] > 0 and m["critic/loss"] > 0
        assert m["rollout/kl_coef"] > 0 and m["rollout/kl_ref_per_sequence"] > -1e-3  # k1 can dip below 0 by noise
        assert 0.0 < m["train/entropy"]
    assert steps[1]["rollout/kl_coef"] != steps[0]["rollout/kl_coef"]  # the adaptive controller moved it
    assert_the_clip_acts(steps)
    assert all(m["critic/optimizer_steps"] == 4 for m in steps)  # the critic takes the same plan
    check_checkpoints_and_registry_commands(tmp_path, tmp_path / "ppo")


def test_dpo_recipe_on_a_pairs_file(tmp_path):
    """recipe=dpo on user pairs: reference logprobs from the Reference service, DPO steps
    on 2 ranks, weights published so the engines evaluate the trained model."""
    pairs = tmp_path / "pairs.jsonl"
    rows = [{"prompt": f"What is {a} + {a}?", "chosen": str(2 * a), "rejected": str(2 * a + 1)} for a in range(8)]
    pairs.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    summary, steps = run_cli(
        tmp_path, "dpo", "recipe=dpo", f"task.pairs_path={pairs}", "algo.preference.pairs_per_step=4",
        "trainer.max_steps=3", "trainer.lr=1e-3", "cluster=local_2ranks", "eval.before=false",
    )
    assert summary["recipe"] == "dpo" and summary["steps"] == 3 and summary["samples"] == 12
    assert summary["weight_version"] == 3
    assert steps[0]["train/loss"] == pytest.approx(0.693, abs=0.01)  # policy == reference at step 1
    assert steps[-1]["train/loss"] < steps[0]["train/loss"] and steps[-1]["train/reward_margin"] > 0


def test_reward_model_trained_then_served_to_ppo(tmp_path):
    """recipe=rm on a pairs file (no rollout engine), then a PPO run whose reward mixes
    the verifier with that reward model."""
    pairs = tmp_path / "pairs.jsonl"
    rows = [{"prompt": f"What is {a} + {a}?", "chosen": str(2 * a), "rejected": f"I think it is {2 * a + 1}"} for a in range(12)]
    pairs.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    summary, steps = run_cli(
        tmp_path, "rm", "recipe=rm", f"task.pairs_path={pairs}", "algo.preference.pairs_per_step=4", "algo.preference.rm_held_out=0.25",
        "trainer.max_steps=6", "trainer.lr=1e-3",
    )
    assert summary["recipe"] == "rm" and summary["steps"] == 6 and summary["held_out_pairs"] == 3
    assert summary["train_pairs"] == 9 and 0.0 <= summary["pair_accuracy_after"] <= 1.0
    assert steps[-1]["train/loss"] < steps[0]["train/loss"]
    model_dir = tmp_path / "rm" / "reward_model"
    assert summary["reward_model_path"] == str(model_dir) and (model_dir / "config.json").is_file()
    mix = f"reward.functions=[{{name:math_answer,weight:0.5}},{{name:reward_model,path:'{model_dir}',weight:0.5}}]"
    summary, steps = run_cli(tmp_path, "ppo-rm", "recipe=ppo", "trainer.max_steps=2", "eval.before=false", mix)
    assert summary["recipe"] == "ppo" and summary["steps"] == 2
    # the reward model's scores are real numbers, not the verifier's 0/1
    assert any(m["rollout/reward_mean"] not in (0.0, 0.5, 1.0) for m in steps)


def check_checkpoints_and_registry_commands(tmp_path, run_dir) -> None:
    """Two checkpoints of a PPO run (policy, critic, queue) and every `rlhf` command on them."""
    from transformers import AutoModelForCausalLM

    from rlhf_platform.checkpoint_dir import verify_checkpoint

    code, out, err = rlhf(tmp_path, "ckpt", "list", "--run", str(run_dir), "--json")
    assert code == 0, err
    versions = json.loads(out)
    assert [(v["id"], v["step"], v["weight_version"], v["parent"]) for v in versions] == [(1, 1, 1, None), (2, 2, 2, 1)]
    assert versions[1]["head"] and versions[1]["data_position"]["prompts_acked"] == 2 * 4
    for v in versions:
        manifest = verify_checkpoint(Path(v["path"]))
        assert {"policy/hf/config.json", "prompt_queue.json", "run_state.json"} <= set(manifest.files)
        assert any(name.startswith("critic/") for name in manifest.files)
        assert v["checksum"] == manifest.checksum and v["metrics"]["critic/grad_norm"] > 0

    code, out, err = rlhf(tmp_path, "ckpt", "list", "--run", str(run_dir))
    assert code == 0 and "candidate" in out and "*2" in out, err
    assert rlhf(tmp_path, "registry", "promote", "1", "--run", str(run_dir))[0] == 0
    code, out, err = rlhf(tmp_path, "ckpt", "rollback", "1", "--run", str(run_dir))
    assert code == 0 and "rolled_back: 2" in out, err
    code, out, err = rlhf(tmp_path, "ckpt", "show", "2", "--run", str(run_dir), "--json")
    shown = json.loads(out)
    assert shown["status"] == "rolled_back" and shown["lineage"] == [2, 1] and not shown["head"]
    code, out, err = rlhf(tmp_path, "ckpt", "show", "1", "--run", str(run_dir))
    assert code == 0 and "promoted" in out and "lineage 1" in out, err

    code, out, err = rlhf(tmp_path, "export", "1", "--run", str(run_dir), "--out", str(tmp_path / "exported"))
    assert code == 0, err
    AutoModelForCausalLM.from_pretrained(tmp_path / "exported")  # a plain HF directory
    hf_weights = Path(versions[1]["path"]) / "policy" / "hf" / "model.safetensors"
    hf_weights.write_bytes(hf_weights.read_bytes()[:-8] + b"corrupt!")
    code, out, err = rlhf(tmp_path, "export", "2", "--run", str(run_dir), "--out", str(tmp_path / "bad"))
    assert code == 2 and "policy/hf/model.safetensors was altered" in err
    assert not (tmp_path / "bad").exists()
