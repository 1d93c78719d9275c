"""Datasets the HF way (issue 18, item 1; item 6's data side): every kind of source
task.train_path / eval_path accept, split selection, hub names from the local cache only,
chat-turn prompts through a real chat template, and difficulty weights without digits."""
from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rlhf_platform.config import ConfigError, TaskConfig
from rlhf_platform.data import DataError, load_eval_rows, load_rows, task_rows
from rlhf_platform.datasets_io import open_source
from rlhf_platform.prompts import ModelTemplateError, tokenize_rows

ROWS = [
    {"prompt_id": "a", "question": "What is 1 + 1?", "answer": "2", "difficulty": 0},
    {"prompt_id": "b", "question": "What is 2 + 3?", "answer": "007", "difficulty": 1},
    {"prompt_id": "c", "question": "What is 9 + 9?", "answer": "18", "difficulty": 2},
]


@pytest.fixture(autouse=True)
def hf_caches(tmp_path, monkeypatch):
    """Hugging Face caches under tmp_path: nothing here reads or writes the user's."""
    caches = {"HF_HOME": tmp_path / "hf", "HF_DATASETS_CACHE": tmp_path / "hf" / "datasets", "HF_HUB_CACHE": tmp_path / "hf" / "hub"}
    for name, path in caches.items():
        monkeypatch.setenv(name, str(path))
    return caches


def write(path: Path, rows: list[dict], fmt: str | None = None) -> Path:
    """`rows` as a data file of the format its suffix names."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = fmt or path.suffix[1:]
    if fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif fmt == "json":
        path.write_text(json.dumps(rows, indent=1))
    elif fmt == "parquet":
        pq.write_table(pa.Table.from_pylist(rows), path)
    elif fmt == "arrow":  # an Arrow IPC file, as pyarrow / feather v2 write it
        with pa.ipc.new_file(str(path), pa.Table.from_pylist(rows).schema) as out:
            out.write_table(pa.Table.from_pylist(rows))
    elif fmt == "csv":
        with open(path, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return path


def load(path, **kw) -> list[tuple[str, str, str, int]]:
    loaded = load_rows(path, "question", "answer", levels=3, **kw)
    return [(r.prompt_id, r.prompt, r.answer, r.difficulty) for r in loaded.rows]


EXPECTED = [(r["prompt_id"], r["question"], r["answer"], r["difficulty"]) for r in ROWS]


# ---------------------------------------------------------------- one file of each format


@pytest.mark.parametrize("suffix", ["jsonl", "json", "parquet", "csv", "arrow"])
def test_each_file_format_loads_the_same_rows(tmp_path, suffix):
    # csv: the answer "007" stays text and the difficulty column is read as an integer
    assert load(write(tmp_path / f"d.{suffix}", ROWS)) == EXPECTED


def test_datasets_written_arrow_file_and_json_lines_in_a_json_file(tmp_path):
    import datasets

    datasets.Dataset.from_list(ROWS).save_to_disk(str(tmp_path / "saved"))
    [arrow] = (tmp_path / "saved").glob("*.arrow")  # an Arrow IPC stream, as `datasets` writes its files
    assert load(arrow) == EXPECTED
    assert load(write(tmp_path / "lines.json", ROWS, fmt="jsonl")) == EXPECTED


def test_csv_rows_are_numbered_by_line_and_bad_rows_named(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text('\ufeffquestion,answer\n"1+1",2\n\n"multi\nline",3\n"x",\n', encoding="utf-8")  # with a byte-order mark
    with pytest.raises(DataError, match=rf"^{tmp_path}/d\.csv: row 6: missing field 'answer'$"):
        load_rows(path, "question", "answer")
    loaded = load_rows(path, "question", "answer", on_bad_row="skip")
    assert [(r.line, r.prompt_id, r.prompt) for r in loaded.rows] == [(2, "d.csv-2", "1+1"), (4, "d.csv-4", "multi\nline")]
    assert loaded.skipped == 1


# ---------------------------------------------------------------- folders, globs, splits


def test_save_to_disk_dataset_and_dataset_dict_with_split_selection(tmp_path):
    import datasets

    datasets.Dataset.from_list(ROWS).save_to_disk(str(tmp_path / "one"))
    assert load(tmp_path / "one") == EXPECTED
    datasets.DatasetDict({
        "train": datasets.Dataset.from_list(ROWS[:2]), "test": datasets.Dataset.from_list(ROWS[2:]),
    }).save_to_disk(str(tmp_path / "dict"))
    assert [r[0] for r in load(tmp_path / "dict", split="train")] == ["a", "b"]
    assert [r[0] for r in load(tmp_path / "dict", split="test")] == ["c"]
    with pytest.raises(DataError, match=r"holds splits train, test; set task.train_split to one"):
        load(tmp_path / "dict")
    # as task.eval_path: eval_split None takes its "test" split
    assert [r.prompt_id for r in load_eval_rows(str(tmp_path / "dict"), None, None, "question", "answer", levels=3).rows] == ["c"]
    with pytest.raises(DataError, match=r"task.train_split='dev': task.train_path='.*dict' has no split 'dev'; its splits: train, test"):
        load(tmp_path / "dict", split="dev")
    # an error in a split names the split
    datasets.DatasetDict({"test": datasets.Dataset.from_list([{"question": "", "answer": "1"}])}).save_to_disk(str(tmp_path / "bad"))
    with pytest.raises(DataError, match=r"bad \(split test\): row 1: field 'question' is empty"):
        load(tmp_path / "bad", split="test")


def test_folder_of_split_files_gives_train_and_eval_from_one_source(tmp_path):
    folder = tmp_path / "gsm"
    write(folder / "data" / "train-00000.jsonl", ROWS[:2])
    write(folder / "data" / "train-00001.jsonl", [{**ROWS[2], "prompt_id": None}])
    write(folder / "data" / "test-00000.jsonl", [{"question": "held out", "answer": "1"}])
    task = TaskConfig(name="dataset", train_path=str(folder), prompt_field="question", weights=[1, 1, 1])
    train, held_out = task_rows(task, 0, tmp_path / "work")
    # files in name order; a row without prompt_id is named by its file (relative to the folder) and row
    assert [r.prompt_id for r in train.rows] == ["a", "b", "data/train-00001.jsonl-1"]
    assert train.source == f"{folder} (split train)" and train.rows[2].source == str(folder / "data" / "train-00001.jsonl")
    assert [r.prompt for r in held_out.rows] == ["held out"]  # eval_split None: the "test" split
    task.eval_split = "validation"
    with pytest.raises(DataError, match=r"task.eval_split='validation': task.train_path=.* has no split 'validation'"):
        task_rows(task, 0, tmp_path / "work")
    assert not (tmp_path / "hf").exists()  # resolving local files writes nothing to the HF cache
    write(folder / "data" / "test-00001.parquet", [{"question": "held out", "answer": "1"}])
    with pytest.raises(DataError, match=r"not a folder `datasets` can read \(Couldn't infer the same data file format for all splits"):
        task_rows(task, 0, tmp_path / "work")


def test_glob_reads_every_matching_file_and_names_the_file_of_a_bad_row(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "data" / "train-0.parquet", ROWS[:2])
    write(tmp_path / "data" / "train-1.parquet", [ROWS[2], {"question": "no answer", "answer": None}])
    write(tmp_path / "data" / "test-0.parquet", [{"question": "q", "answer": "1"}])
    with pytest.raises(DataError, match=r"^data/train-1\.parquet: row 2: missing field 'answer'$"):
        load("data/train-*.parquet")
    loaded = load_rows("data/train-*.parquet", "question", "answer", levels=3, on_bad_row="skip")
    assert [r.prompt_id for r in loaded.rows] == ["a", "b", "c"] and loaded.skipped == 1
    write(tmp_path / "data" / "train-1.parquet", [ROWS[2]])
    write(tmp_path / "data" / "train-2.parquet", [ROWS[0]])
    with pytest.raises(DataError, match=r"^data/train-2\.parquet: row 1: prompt_id 'a' repeats data/train-0\.parquet row 1$"):
        load("data/train-*.parquet")
    with pytest.raises(DataError, match=r"task.train_path='data/nothing-\*.jsonl': the glob matches no data files"):
        load("data/nothing-*.jsonl")


def test_eval_split_from_the_train_source_must_differ_and_single_files_have_no_test_split(tmp_path):
    with pytest.raises(ConfigError, match="task.eval_split='train' is task.train_split too"):
        TaskConfig(name="dataset", train_path="x", eval_split="train").validate()
    path = write(tmp_path / "d.jsonl", ROWS)
    task = TaskConfig(name="dataset", train_path=str(path), prompt_field="question", weights=[1, 1, 1])
    assert task_rows(task, 0, tmp_path)[1].rows == []  # a single file: no held-out split, as before
    task.eval_split = "test"  # asked for explicitly: an error, never ignored
    with pytest.raises(DataError, match=r"has no split 'test'; its splits: train \(a single file, a glob or a saved Dataset is split 'train'\)"):
        task_rows(task, 0, tmp_path)
    task.eval_split, task.eval_path = None, str(write(tmp_path / "e.csv", [{**ROWS[0], "question": "What is 4 + 4?"}]))
    assert [r.prompt_id for r in task_rows(task, 0, tmp_path)[1].rows] == ["a"]  # eval_path's only split


# ---------------------------------------------------------------- hub names, local cache only


def cache_hub_dataset(tmp_path: Path, cache: Path, name: str, config: str, splits: dict[str, list[dict]]) -> None:
    """Prepare `name` in the datasets cache as `datasets.load_dataset(name, config)` leaves it
    after a download (<namespace>___<name>/<config>/<version>/<hash>/ with dataset_info.json
    and one arrow file per split), built offline from local jsonl files."""
    from datasets.packaged_modules.json.json import Json

    namespace, short = name.split("/")
    files = {split: str(write(tmp_path / "src" / config / f"{split}.jsonl", rows)) for split, rows in splits.items()}
    build = tmp_path / "build"
    Json(cache_dir=str(build), dataset_name=short, config_name=config, config_id=config, data_files=files, hash="0123abcd").download_and_prepare()
    cache.mkdir(parents=True, exist_ok=True)
    target = cache / f"{namespace}___{short}"
    target.mkdir(exist_ok=True)
    shutil.move(str(build / short / config), str(target / config))


def test_hub_name_is_read_from_the_local_datasets_cache(tmp_path, hf_caches):
    cache = hf_caches["HF_DATASETS_CACHE"]
    cache_hub_dataset(tmp_path, cache, "openai/gsm8k", "main", {"train": ROWS[:2], "test": ROWS[2:]})
    task = TaskConfig(name="dataset", train_path="openai/gsm8k", dataset_config="main", prompt_field="question", weights=[1, 1, 1])
    train, held_out = task_rows(task, 0, tmp_path / "work")
    assert [r.prompt_id for r in train.rows] == ["a", "b"] and [r.prompt_id for r in held_out.rows] == ["c"]
    assert train.source == "openai/gsm8k (config main, split train)"
    task.dataset_config = None  # one config cached: taken
    assert [r.prompt_id for r in task_rows(task, 0, tmp_path / "work")[1].rows] == ["c"]

    # the fixture is what `datasets` itself reads offline
    script = "import datasets, json; print(json.dumps(datasets.load_dataset('openai/gsm8k', 'main', split='test')['prompt_id'][:]))"
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == ["c"], out.stderr[-2000:]

    cache_hub_dataset(tmp_path, cache, "openai/gsm8k", "socratic", {"train": ROWS[:1]})
    with pytest.raises(DataError, match=r"holds several configs of it \(main, socratic\); set task.dataset_config to one"):
        task_rows(task, 0, tmp_path / "work")
    task.dataset_config = "socratic"
    assert [r.prompt_id for r in task_rows(task, 0, tmp_path / "work")[0].rows] == ["a"]


def test_hub_name_from_a_hub_snapshot_with_readme_configs(tmp_path, hf_caches):
    """A repo fetched with `hf download --repo-type dataset` sits in the hub cache; its
    README.md `configs:` say which files make which split."""
    snapshot = hf_caches["HF_HUB_CACHE"] / "datasets--openai--gsm8k" / "snapshots" / ("f" * 40)
    for config in ("main", "socratic"):
        write(snapshot / config / "train-00000-of-00001.parquet", ROWS[:2])
        write(snapshot / config / "test-00000-of-00001.parquet", [{"question": f"{config} test", "answer": "1"}])
    (snapshot / "README.md").write_text("---\nconfigs:\n" + "".join(
        f"- config_name: {c}\n  data_files:\n  - split: train\n    path: {c}/train-*\n  - split: test\n    path: {c}/test-*\n"
        for c in ("main", "socratic")
    ) + "---\n")
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text("f" * 40)
    task = TaskConfig(name="dataset", train_path="openai/gsm8k", prompt_field="question", weights=[1, 1, 1])
    with pytest.raises(DataError, match=r"it has several configs: main, socratic; set task.dataset_config to one"):
        task_rows(task, 0, tmp_path / "work")
    task.dataset_config = "socratic"
    train, held_out = task_rows(task, 0, tmp_path / "work")
    assert [r.prompt_id for r in train.rows] == ["a", "b"] and [r.prompt for r in held_out.rows] == ["socratic test"]


def test_hub_name_not_in_the_cache_says_where_it_looked_and_how_to_fix_it(tmp_path, hf_caches):
    task = TaskConfig(name="dataset", train_path="openai/gsm8k", dataset_config="main")
    with pytest.raises(DataError) as err:
        task_rows(task, 0, tmp_path / "work")
    message = str(err.value)
    assert message.startswith(
        "task.train_path='openai/gsm8k': no local file or folder of that name, "
        "and dataset 'openai/gsm8k' (config 'main') is not in the local Hugging Face cache"
    )
    assert f"looked in {hf_caches['HF_DATASETS_CACHE']} and {hf_caches['HF_HUB_CACHE']}" in message
    assert "datasets.load_dataset('openai/gsm8k', 'main')" in message and "point task.train_path at local files" in message
    # a file-like name that does not exist is a missing file, not a hub lookup
    with pytest.raises(DataError, match=r"task.train_path='missing.jsonl': missing.jsonl: dataset does not exist"):
        load_rows("missing.jsonl", "question", "answer")


# ---------------------------------------------------------------- chat turns and system prompts


def chat_row(messages, **extra):
    return {"messages": messages, "answer": "4", **extra}


def test_messages_with_a_system_prompt_render_through_the_chat_template(tmp_path, tiny_tokenizer):
    messages = [
        {"role": "system", "content": "You add numbers."},
        {"role": "user", "content": "What is 1 + 1?"},
        {"role": "assistant", "content": "2"},
        {"role": "user", "content": "And 2 + 2?"},
    ]
    path = write(tmp_path / "chat.jsonl", [chat_row(messages)])
    loaded = load_rows(path, "messages", "answer", system_prompt="ignored: the row has its own")
    [prompt], skipped = tokenize_rows(tiny_tokenizer, loaded, 200)
    expected = "<|system|>You add numbers.\n<|user|>What is 1 + 1?\n<|assistant|>2\n<|user|>And 2 + 2?\n<|assistant|>"
    assert tiny_tokenizer.decode(prompt.token_ids) == expected
    assert list(prompt.token_ids) == tiny_tokenizer(expected, add_special_tokens=False)["input_ids"]
    assert prompt.text == "And 2 + 2?" and skipped == 0  # rewards and logs see the question


def test_system_prompt_is_added_to_plain_prompts_and_turnless_messages(tmp_path, tiny_tokenizer):
    path = write(tmp_path / "d.parquet", [
        {"messages": "What is 1 + 1?", "answer": "2"},
        {"messages": None, "answer": "4", "chat": [{"role": "user", "content": "What is 2 + 2?"}]},
    ])
    plain = load_rows(path, "messages", "answer", system_prompt="Be brief.", on_bad_row="skip")
    [prompt], _ = tokenize_rows(tiny_tokenizer, plain, 200)
    assert tiny_tokenizer.decode(prompt.token_ids) == "<|system|>Be brief.\n<|user|>What is 1 + 1?\n<|assistant|>"
    assert prompt.text == "What is 1 + 1?"
    chat = load_rows(write(tmp_path / "c.jsonl", [chat_row([{"role": "user", "content": "2 + 2?"}])]), "messages", "answer", system_prompt="Be brief.")
    assert chat.rows[0].messages == (("system", "Be brief."), ("user", "2 + 2?"))
    # without system_prompt a plain prompt renders as before: one user turn
    [before], _ = tokenize_rows(tiny_tokenizer, load_rows(path, "messages", "answer", on_bad_row="skip"), 200)
    assert tiny_tokenizer.decode(before.token_ids) == "<|user|>What is 1 + 1?\n<|assistant|>"
    # the built-in task takes it too
    task = TaskConfig(digits=[1], weights=[1], train_size=3, eval_size=1, system_prompt="Be brief.")
    train, _ = task_rows(task, 0, tmp_path / "work")
    assert tiny_tokenizer.decode(tokenize_rows(tiny_tokenizer, train, 200)[0][0].token_ids).startswith("<|system|>Be brief.\n<|user|>What is")


def test_chat_turns_without_a_chat_template_name_the_model_and_the_key(tmp_path, tiny_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.chat_template = None
    path = write(tmp_path / "d.jsonl", [{"prompt": "What is 1 + 1?", "answer": "2"}])
    plain = load_rows(path, "prompt", "answer")
    assert tokenizer.decode(tokenize_rows(tokenizer, plain, 200)[0][0].token_ids) == "What is 1 + 1?"  # as before
    with_system = load_rows(path, "prompt", "answer", system_prompt="Be brief.")
    for on_bad_row in ("error", "skip"):  # not a bad row: the model cannot render any of them
        with pytest.raises(ModelTemplateError) as err:
            tokenize_rows(tokenizer, with_system, 200, on_bad_row)
        assert str(err.value).startswith(f"{path}: row 1 (d.jsonl-1): the prompt has chat turns (system, user")
        assert f"({tiny_model_dir}) has no chat template" in str(err.value) and "task.system_prompt" in str(err.value)


BAD_MESSAGES = {
    "not a list": (7, "field 'messages' must be a string or a list of {role, content} turns, got int"),
    "empty": ([], "field 'messages' is an empty list of turns"),
    "turn not an object": (["hi"], "field 'messages' turn 1 must be an object with 'role' and 'content', got str"),
    "unknown role": ([{"role": "tool", "content": "x"}], "field 'messages' turn 1: role 'tool' is not allowed; use system, user, assistant"),
    "system not first": ([{"role": "user", "content": "q"}, {"role": "system", "content": "s"}, {"role": "user", "content": "q"}],
                         "field 'messages' turn 2: a system turn must come first"),
    "content not text": ([{"role": "user", "content": 3}], "field 'messages' turn 1 content must be a string, got int"),
    "blank content": ([{"role": "user", "content": " "}], "field 'messages' turn 1 content is empty"),
    "last not user": ([{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
                      "field 'messages': the last turn is 'assistant'; it must be the user's"),
}


ONE_TYPE = ("not a list", "turn not an object", "content not text")  # a parquet column cannot mix these with turns


@pytest.mark.parametrize(
    "name,suffix", [(name, "jsonl") for name in BAD_MESSAGES] + [(name, "parquet") for name in BAD_MESSAGES if name not in ONE_TYPE]
)
def test_bad_messages_rows_name_file_and_row(tmp_path, name, suffix):
    value, message = BAD_MESSAGES[name]
    good = chat_row([{"role": "user", "content": "q"}], prompt_id=None)
    rows = [good, {**good, "messages": value}, {**good, "prompt_id": "x"}]
    path = write(tmp_path / f"d.{suffix}", rows)
    with pytest.raises(DataError) as err:
        load_rows(path, "messages", "answer")
    assert str(err.value) == f"{path}: row 2: {message}"
    loaded = load_rows(path, "messages", "answer", on_bad_row="skip")
    assert loaded.skipped == 1 and [r.prompt_id for r in loaded.rows] == [f"d.{suffix}-1", "x"]


# ---------------------------------------------------------------- difficulty weights without digits


def test_dataset_weights_need_no_digits_and_are_checked_against_the_levels_present(tmp_path):
    path = write(tmp_path / "d.jsonl", ROWS)  # levels 0, 1, 2
    task = TaskConfig(name="dataset", train_path=str(path), prompt_field="question", weights=[0.2, 0.3, 0.5])
    task.validate()  # three weights, and task.digits still has its default two entries
    train, _ = task_rows(task, 0, tmp_path)
    assert train.level_counts() == {0: 1, 1: 1, 2: 1}
    with pytest.raises(ConfigError, match="task.weights has 3 entries but task.digits has 2"):
        TaskConfig(weights=[0.2, 0.3, 0.5]).validate()  # the arithmetic task still pairs them
    task.weights = [0.5, 0.5]  # level 2 has no weight: its row is a bad row, named
    with pytest.raises(DataError, match=rf"^{path}: row 3: field 'difficulty' is 2; it must be an integer from 0 to 1"):
        task_rows(task, 0, tmp_path)
    level0 = write(tmp_path / "easy.jsonl", [{**r, "difficulty": 0} for r in ROWS])
    task.train_path, task.weights = str(level0), [0.0, 1.0]  # the only level present weighs nothing
    with pytest.raises(DataError, match=r"task.weights=\[0.0, 1.0\] gives no weight to the difficulty levels of .*easy\.jsonl \(level 0: 3 rows\)"):
        task_rows(task, 0, tmp_path)


def test_dataset_yaml_composes_with_the_new_keys():
    from support import compose_cfg

    from rlhf_platform.config import to_config

    cfg = to_config(compose_cfg(
        "task=dataset", "task.train_path=openai/gsm8k", "task.dataset_config=main", "task.eval_split=test",
        "task.system_prompt=Be brief.", "task.weights=[0.2,0.3,0.5]",
    ))
    assert (cfg.task.train_split, cfg.task.eval_split, cfg.task.dataset_config, cfg.task.system_prompt) == ("train", "test", "main", "Be brief.")


# --- what a hostile review found -----------------------------------------------------


def test_a_folder_readme_naming_remote_or_outside_files_is_refused_before_any_read(tmp_path, monkeypatch):
    """A README.md `configs:` block may name hf:// data files (a download) or files
    outside the folder (../secret): both are refused, naming the file, and nothing is
    fetched (sockets fail the test)."""
    import socket

    def no_network(*args, **kwargs):
        raise AssertionError("a dataset folder reached for the network")

    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    write(tmp_path / "secret" / "creds.jsonl", [{"prompt": "SECRET", "answer": "1"}])
    for name, data_files, message in [
        ("remote", "hf://datasets/openai/gsm8k/main/train-*.parquet", r"names remote data files \(hf://"),
        ("outside", "../secret/*.jsonl", "outside the folder"),
        ("absolute", str(tmp_path / "secret" / "creds.jsonl"), "outside the folder"),
    ]:
        folder = tmp_path / name
        write(folder / "train.jsonl", [{"prompt": "q", "answer": "1"}])
        (folder / "README.md").write_text(
            f"---\nconfigs:\n- config_name: default\n  data_files:\n  - split: train\n    path: {data_files}\n---\n"
        )
        with pytest.raises(DataError, match=message) as err:
            load_rows(folder, "prompt", "answer", key="task.train_path")
        assert str(err.value).startswith(f"task.train_path={str(folder)!r}")


def test_held_out_rows_from_a_training_file_are_refused(tmp_path):
    data = tmp_path / "d"
    write(data / "train.jsonl", [{"prompt_id": f"t{i}", "prompt": f"q{i}", "answer": "1"} for i in range(3)])
    write(data / "test.jsonl", [{"prompt_id": f"e{i}", "prompt": f"e{i}", "answer": "1"} for i in range(2)])
    for train_path, eval_path in [(f"{data}/*.jsonl", f"{data}/test.jsonl"), (f"{data}/train.jsonl", f"{data}/train.jsonl")]:
        task = TaskConfig(name="dataset", train_path=train_path, eval_path=eval_path, weights=[1.0])
        with pytest.raises(DataError, match="held-out prompts must not be trained on"):
            task_rows(task, 0, tmp_path / "out")


def test_a_chat_template_that_refuses_system_turns_is_a_setup_error_not_skipped_rows(tmp_path, tiny_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.chat_template = (  # as Gemma's: no system role
        "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
        "<{{ m['role'] }}>{{ m['content'] }}{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}"
    )
    path = write(tmp_path / "d.jsonl", [{"prompt": f"q{i}", "answer": "1"} for i in range(3)])
    rows = load_rows(path, "prompt", "answer", system_prompt="Be brief.")
    with pytest.raises(ModelTemplateError, match="refuses system turns"):
        tokenize_rows(tokenizer, rows, 200, "skip")  # every row would be skipped: it is the setup that is wrong
    assert len(tokenize_rows(tokenizer, load_rows(path, "prompt", "answer"), 200, "skip")[0]) == 3


def test_byte_order_marks_broken_arrays_and_unclosed_quotes(tmp_path):
    bom = tmp_path / "bom.jsonl"
    bom.write_bytes(b"\xef\xbb\xbf" + b'{"prompt": "a", "answer": "1"}\n{"prompt": "b", "answer": "2"}\n')
    assert [r.prompt for r in load_rows(bom, "prompt", "answer").rows] == ["a", "b"]
    array = tmp_path / "bad.json"
    array.write_text('[\n {"prompt": "a", "answer": "1"},\n {"prompt": "b" "answer": "2"}\n]\n')
    for on_bad_row in ("error", "skip"):  # one broken array: the file's error, not a count of skipped lines
        with pytest.raises(DataError, match="one JSON array that is not valid JSON"):
            load_rows(array, "prompt", "answer", on_bad_row)
    quoted = tmp_path / "q.csv"
    quoted.write_text('prompt,answer\nfine,1\n"unclosed quote,2\n' + "".join(f"q{i},{i}\n" for i in range(6)))
    with pytest.raises(DataError, match=r"q.csv: row 3: a quote opened there is not closed .* lines 3-9"):
        load_rows(quoted, "prompt", "answer", "skip")  # six rows would have vanished as one skipped row
    multiline = tmp_path / "m.csv"
    multiline.write_text('prompt,answer\n"two\nlines",1\nnext,2\n')  # a closed quote across lines is a row
    assert [(r.prompt, r.line) for r in load_rows(multiline, "prompt", "answer").rows] == [("two\nlines", 2), ("next", 4)]


# ---------------------------------------------------------------- hostile review: formats, paths, links, duplicates


def test_a_split_spread_over_several_formats_reads_every_file(tmp_path):
    """Hostile-review finding D3: `datasets` reads one format per folder, so train-1.csv's rows
    vanished beside train-0.jsonl, without a count."""
    folder = tmp_path / "mixed"
    write(folder / "train-0.jsonl", [{"prompt": f"j{i}", "answer": str(i)} for i in range(2)])
    write(folder / "train-1.csv", [{"prompt": f"c{i}", "answer": str(i)} for i in range(5)])
    write(folder / "test-0.jsonl", [{"prompt": "t", "answer": "1"}])
    write(folder / "test-1.csv", [{"prompt": "u", "answer": "1"}])
    assert len(load_rows(str(folder), "prompt", "answer", split="test").rows) == 2
    loaded = load_rows(str(folder), "prompt", "answer", split="train")
    assert len(loaded.rows) == 7 and loaded.skipped == 0
    assert {Path(r.source).name for r in loaded.rows} == {"train-0.jsonl", "train-1.csv"}


@pytest.mark.parametrize(
    "value,reason",
    [("~nosuchuser_xyz/x.jsonl", "not a usable path: Could not determine home directory"),
     ("a" * 5000, "not a usable path: File name too long"),
     ("d/" + "b" * 5000 + ".jsonl", "not a usable path: File name too long")],
    ids=["unknown-user", "long-name", "long-file-name"],
)
def test_an_unusable_path_names_its_key(value, reason):
    """Hostile-review finding D5: a bare RuntimeError / OSError 36 naming no key."""
    with pytest.raises(DataError, match=rf"^task\.train_path='.*: {reason}"):
        open_source(value, "task.train_path")


def test_a_link_out_of_a_folder_without_a_readme_is_named_as_a_link(tmp_path):
    """Hostile-review minor finding: the refusal blamed "its README.md" in a folder that has none."""
    outside = write(tmp_path / "secret" / "data.jsonl", ROWS)
    folder = tmp_path / "data"
    write(folder / "train.jsonl", ROWS)
    (folder / "test.jsonl").symlink_to(outside)
    with pytest.raises(DataError) as err:
        open_source(str(folder), "task.train_path")
    assert f"its data file {folder / 'test.jsonl'}" in str(err.value) and f"is a link to {outside}" in str(err.value)
    assert "README" not in str(err.value) and "outside the folder" in str(err.value)


def test_a_csv_header_naming_a_column_twice_is_refused(tmp_path):
    """Hostile-review minor finding: a duplicated header silently took the last column's value."""
    path = tmp_path / "d.csv"
    path.write_text("prompt,answer,answer\nq,1,2\n")
    with pytest.raises(DataError, match=r"d.csv: the header \(line 1\) names column\(s\) 'answer' more than once"):
        load_rows(path, "prompt", "answer")


@pytest.mark.parametrize("suffix", ["jsonl", "json"])
def test_a_json_row_with_a_key_twice_is_a_bad_row(tmp_path, suffix):
    """Hostile-review minor finding: duplicate JSON keys silently took the last value."""
    path = tmp_path / f"d.{suffix}"
    text = '{"prompt": "a", "answer": "1"}\n{"prompt": "b", "answer": "1", "answer": "2"}\n'
    path.write_text(text if suffix == "jsonl" else "[" + text.replace("}\n{", "},{").strip() + "]")
    with pytest.raises(DataError, match=rf"d.{suffix}: row 2: the key 'answer' appears twice in one object"):
        load_rows(path, "prompt", "answer")
    assert load_rows(path, "prompt", "answer", on_bad_row="skip").skipped == 1
