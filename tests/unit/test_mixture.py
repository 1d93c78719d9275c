"""Task mixtures: several datasets drawn with their probabilities, each with its own
difficulty weights and reward functions; the ledger and resume stay exact."""
from __future__ import annotations

import json
from collections import Counter

import pytest

from rlhf_platform.config import ConfigError, RewardConfig, RewardFunctionConfig
from rlhf_platform.roles.prompt_queue import PromptQueue, pool_weights
from rlhf_platform.types import Prompt, Trajectory
from support import small_cfg

INPROCESS = ["executor=inprocess", "rollout.backend=hf", "eval.max_new_tokens=4", "rollout.max_new_tokens=6"]


def prompts(dataset: str, count: int, levels: int = 1) -> list[Prompt]:
    return [Prompt(f"{dataset}/{i}", f"q{i}", (1, i), str(i), i % levels, dataset) for i in range(count)]


def test_pool_weights_give_each_dataset_its_probability_whatever_its_levels():
    pools = {"a/0": [], "a/1": [], "a/2": [], "b/0": []}
    weights = pool_weights(pools, [1.0, 1.0, 2.0], {"a": (3.0, None), "b": (1.0, [5.0])})
    assert weights == pytest.approx({"a/0": 0.75 / 4, "a/1": 0.75 / 4, "a/2": 0.75 / 2, "b/0": 0.25})
    with pytest.raises(ValueError, match=r"task.mixture\[b\].weights"):
        pool_weights({"b/3": []}, None, {"b": (1.0, [1.0])})  # level 3, one weight
    with pytest.raises(ValueError, match="not in task.mixture"):
        pool_weights({"c/0": []}, None, {"b": (1.0, None)})


def test_the_queue_draws_datasets_by_probability_and_resumes_exactly():
    mixture = {"gsm": (0.8, None), "code": (0.2, [1.0, 3.0])}
    queue = PromptQueue(prompts("gsm", 50) + prompts("code", 40, levels=2), [1.0], seed=5, mixture=mixture)
    drawn = Counter()
    for _ in range(250):
        lease = queue.lease(8)
        queue.ack(lease.lease_id)
        drawn.update(p.dataset for p in lease.prompts)
        drawn.update(f"code level {p.difficulty}" for p in lease.prompts if p.dataset == "code")
    assert drawn["gsm"] / 2000 == pytest.approx(0.8, abs=0.03)
    assert drawn["code level 1"] / drawn["code"] == pytest.approx(0.75, abs=0.05)  # its own level weights
    ledger = queue.get_ledger()
    assert len(ledger) == 2000 and Counter(ledger).most_common(1)[0][1] <= 2000 * 0.8 / 50 + 1  # epochs, no favourite

    state = json.loads(json.dumps(queue.get_state()))
    twin = PromptQueue(prompts("gsm", 50) + prompts("code", 40, levels=2), [1.0], seed=5, mixture=mixture)
    twin.load_state(state)
    for _ in range(5):
        a, b = queue.lease(8), twin.lease(8)
        assert [p.prompt_id for p in a.prompts] == [p.prompt_id for p in b.prompts] and a.seed == b.seed
    assert set(state["pending"]) == {"gsm/0", "code/0", "code/1"}


def test_mixture_keys_are_checked():
    base = ["task=dataset"]
    for overrides, key in [
        (["task.train_path=x.jsonl", "task.mixture=[{name:a,path:x.jsonl}]"], "task.mixture replaces"),
        (["task.mixture=[{name:a,path:x.jsonl,probability:-1}]"], r"task.mixture\[0\].probability"),
        (["task.mixture=[{name:held_out,path:x.jsonl}]"], r"task.mixture\[0\].name"),
        (["task.mixture=[{name:a,path:x.jsonl,weights:[0.0]}]"], r"task.mixture\[0\].weights"),
        (["task.mixture=[{name:a,path:x.jsonl,reward_functions:[]}]"], r"task.mixture\[0\].reward_functions"),
        (["task.mixture=[{name:a,path:x.jsonl}]", "eval.sets=[{name:a,path:y.jsonl}]"], r"task.mixture\[0\].name"),
    ]:
        with pytest.raises(ConfigError, match=key):
            small_cfg(*base, *overrides)


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_mixture_rows_are_named_by_dataset_and_split_into_held_out_sets(tmp_path):
    from rlhf_platform.data import DataError, mixture_task_rows

    folder = tmp_path / "gsm"
    folder.mkdir()
    write_jsonl(folder / "train.jsonl", [{"prompt_id": i, "question": f"q{i}", "answer": str(i)} for i in range(6)])
    write_jsonl(folder / "test.jsonl", [{"prompt_id": i, "question": f"t{i}", "answer": str(i)} for i in range(3)])
    plain = write_jsonl(tmp_path / "plain.jsonl", [{"prompt_id": i, "prompt": f"p{i}", "answer": "x", "difficulty": i % 2} for i in range(4)])
    cfg = small_cfg(
        "task=dataset", f"task.mixture=[{{name:gsm,path:'{folder}',prompt_field:question}},{{name:plain,path:'{plain}',weights:[1,1]}}]",
    )
    train, held_out = mixture_task_rows(cfg.task)
    assert [r.prompt_id for r in train.rows] == [*(f"gsm/{i}" for i in range(6)), *(f"plain/{i}" for i in range(4))]
    assert {r.dataset for r in train.rows} == {"gsm", "plain"} and [r.dataset for r in held_out.rows] == ["gsm"] * 3
    cfg = small_cfg("task=dataset", f"task.mixture=[{{name:plain,path:'{plain}',weights:[1]}}]")
    with pytest.raises(DataError, match="plain.jsonl"):  # a level-1 row and one weight
        mixture_task_rows(cfg.task)


def scored(dataset: str, text: str, answer: str) -> Trajectory:
    return Trajectory(f"{dataset}/1", "g", [1], [2], [], 0, "stop", prompt_text="q", response_text=text, answer=answer, dataset=dataset)


def test_each_dataset_is_scored_by_its_own_reward_functions():
    from rlhf_platform.evaluation import task_answer_check
    from rlhf_platform.roles.reward import RewardService

    math = [RewardFunctionConfig("math_answer")]
    service = RewardService(math, RewardConfig(functions=math), {"short": [RewardFunctionConfig("brevity", 2.0)]})
    try:
        out = service.score([scored("gsm", "It is 7", "7"), scored("short", "It is 7", "7"), scored("", "8", "7")])
    finally:
        service.workers.close()
    assert out[0].reward_info.keys() == {"math_answer"} and out[0].reward == 1.0
    assert out[1].reward_info.keys() == {"brevity"} and out[1].reward == 2.0 * out[1].reward_info["brevity"]
    assert out[2].reward == 0.0
    cfg = small_cfg("task=dataset", "task.mixture=[{name:gsm,path:x.jsonl},{name:short,path:y.jsonl,reward_functions:[{name:brevity}]}]")
    check = task_answer_check(cfg.task, cfg.reward.functions)
    assert check(out[0]) is True and check(out[1]) != check(out[1])  # brevity verifies nothing: NaN


def test_a_mixture_run_trains_on_both_datasets_and_reports_each_held_out_set(tmp_path):
    from rlhf_platform.recipes.run import run

    gsm = tmp_path / "gsm"
    gsm.mkdir()
    write_jsonl(gsm / "train.jsonl", [{"question": f"What is {i} + 1?", "answer": str(i + 1)} for i in range(12)])
    write_jsonl(gsm / "test.jsonl", [{"question": f"What is {i} + 2?", "answer": str(i + 2)} for i in range(3)])
    chat = tmp_path / "chat"
    chat.mkdir()
    turns = lambda i: [{"role": "system", "content": "Be brief."}, {"role": "user", "content": f"Say {i}."}]  # noqa: E731
    write_jsonl(chat / "train.jsonl", [{"messages": turns(i), "answer": str(i)} for i in range(12)])
    write_jsonl(chat / "validation.jsonl", [{"messages": turns(i), "answer": str(i)} for i in range(20, 22)])
    mixture = (
        f"task.mixture=[{{name:gsm,path:'{gsm}',prompt_field:question,probability:0.5}},"
        f"{{name:chat,path:'{chat}',prompt_field:messages,probability:0.5,reward_functions:[{{name:brevity}}]}}]"
    )
    cfg = small_cfg(*INPROCESS, "task=dataset", mixture, "trainer.max_steps=3", "rollout.max_staleness=0",
                    f"run.root={tmp_path}", "run.name=mix")
    summary = run(cfg, tmp_path / "mix")
    assert set(summary["eval_sets_after"]) == {"held_out", "gsm", "chat"}
    assert summary["eval_sets_after"]["gsm"]["num_prompts"] == 3 and summary["eval_sets_after"]["chat"]["num_prompts"] == 2
    assert summary["eval_sets_after"]["chat"]["accuracy"] is None  # brevity verifies nothing
    ledger = json.loads((tmp_path / "mix" / "prompt_ledger.json").read_text())
    assert len(ledger) == len(set(ledger)) == 12 and {p.split("/")[0] for p in ledger} == {"gsm", "chat"}


def test_a_mixture_dataset_left_without_prompts_is_an_error_not_a_probability_moved():
    with pytest.raises(ValueError, match=r"\['b'\] have no training prompt left"):
        PromptQueue(prompts("a", 5), [1.0], mixture={"a": (0.5, None), "b": (0.5, None)})


def test_huge_finite_mixture_probabilities_keep_their_ratio():
    """Hostile-review finding Q2: probabilities 1e308 and 1e308 summed to inf, every pool weighed
    0, and the queue blamed task.weights."""
    weights = pool_weights({"a/0": [], "b/0": [], "b/1": []}, [1e308, 1e308], {"a": (1e308, None), "b": (1e308, None)})
    assert weights == pytest.approx({"a/0": 0.5, "b/0": 0.25, "b/1": 0.25})
    queue = PromptQueue(prompts("a", 4) + prompts("b", 4), [1.0], seed=1, mixture={"a": (1e308, None), "b": (1e308, None)})
    assert {p.dataset for _ in range(40) for p in queue.lease(1).prompts} == {"a", "b"}
