"""`masa_trl.data`: problem/answer datasets from local files or the Hub, and the prompt-length filter."""

import json
import logging

import pytest
from datasets import Dataset
from transformers import AutoTokenizer

from masa_trl.data import (
    ProblemDataArguments,
    filter_long_prompts,
    hub_dataset_id,
    load_problem_dataset,
    meta_prompt_kwargs,
    prepare_problems,
    prompt_lengths,
)


ROWS = [
    {"problem": "What is 2 + 3?", "answer": "5", "solution": "2 + 3 = 5"},
    {"problem": "What is 7 - 4?", "answer": 3, "solution": "7 - 4 = 3"},
    {"problem": "Compute $\\frac{1}{2} + \\frac{1}{2}$.", "answer": "1", "solution": "..."},
]


def write_jsonl(path, rows):
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    return path


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


class TestLoadProblemDataset:
    def test_jsonl_keeps_problem_and_answer_as_strings(self, tmp_path):
        dataset = load_problem_dataset(str(write_jsonl(tmp_path / "train.jsonl", ROWS)))
        assert dataset.column_names == ["problem", "answer"]
        assert dataset["answer"] == ["5", "3", "1"]  # the integer answer became a string
        assert dataset["problem"][2] == "Compute $\\frac{1}{2} + \\frac{1}{2}$."

    def test_parquet_with_other_column_names(self, tmp_path):
        path = tmp_path / "train.parquet"
        Dataset.from_dict({"question": ["What is 1 + 1?"], "final": ["2"]}).to_parquet(str(path))
        dataset = load_problem_dataset(str(path), problem_column="question", answer_column="final")
        assert dataset.to_list() == [{"problem": "What is 1 + 1?", "answer": "2"}]

    def test_json_array_and_csv(self, tmp_path):
        (tmp_path / "a.json").write_text(json.dumps([{"problem": "p", "answer": "a"}]))
        (tmp_path / "b.csv").write_text("problem,answer\nq,7\n")
        assert load_problem_dataset(str(tmp_path / "a.json")).to_list() == [{"problem": "p", "answer": "a"}]
        assert load_problem_dataset(str(tmp_path / "b.csv")).to_list() == [{"problem": "q", "answer": "7"}]

    def test_missing_column_lists_the_columns_and_names_the_flag(self, tmp_path):
        path = write_jsonl(tmp_path / "train.jsonl", ROWS)
        with pytest.raises(
            ValueError, match=r"no column 'question'.*\['answer', 'problem', 'solution'\].*--problem_column"
        ):
            load_problem_dataset(str(path), problem_column="question")
        with pytest.raises(ValueError, match="--answer_column"):
            load_problem_dataset(str(path), answer_column="final_answer")

    def test_rows_without_problem_or_answer_are_dropped_and_counted(self, tmp_path, caplog):
        rows = ROWS + [{"problem": "", "answer": "1"}, {"problem": "What?", "answer": None}]
        with caplog.at_level(logging.WARNING, logger="masa_trl.data"):
            dataset = load_problem_dataset(str(write_jsonl(tmp_path / "train.jsonl", rows)))
        assert len(dataset) == 3
        assert "Dropped 2 of 5 rows" in caplog.text

    def test_num_rows_reads_only_the_first_rows(self, tmp_path):
        dataset = load_problem_dataset(str(write_jsonl(tmp_path / "train.jsonl", ROWS)), num_rows=2)
        assert dataset["answer"] == ["5", "3"]

    def test_unreachable_hub_says_how_to_use_a_local_copy(self):
        # The test session runs with HF_HUB_OFFLINE=1: the Hub cannot be reached.
        with pytest.raises(ValueError, match="(?s)Could not load the Hugging Face Hub dataset.*--dataset_name"):
            load_problem_dataset("agentica-org/DeepScaleR-Preview-Dataset")

    def test_missing_local_file(self, tmp_path):
        with pytest.raises(FileNotFoundError, match="--dataset_name"):
            load_problem_dataset(str(tmp_path / "nope.jsonl"))

    def test_unknown_extension(self, tmp_path):
        (tmp_path / "train.txt").write_text("problem")
        with pytest.raises(ValueError, match="unknown extension '.txt'"):
            load_problem_dataset(str(tmp_path / "train.txt"))


class TestPromptFilter:
    def test_meta_prompt_is_measured_and_longer(self, tokenizer):
        solution, meta = prompt_lengths(tokenizer, ["What is 2 + 3?"], meta_kwargs=meta_prompt_kwargs())
        assert meta[0] > solution[0] + 100  # the appendix-A meta prompt is the binding one

    def test_filter_counts_solution_and_meta_prompt(self, tokenizer, caplog):
        dataset = Dataset.from_dict({"problem": ["What is 2 + 3?", "What is 2 + 3? " * 40], "answer": ["5", "5"]})
        (_, long_solution), (short_meta, _) = prompt_lengths(
            tokenizer, dataset["problem"], meta_kwargs=meta_prompt_kwargs()
        )
        assert short_meta > long_solution  # so a limit between them separates "solution only" from "with meta"
        limit = short_meta - 1

        assert len(filter_long_prompts(dataset, tokenizer, limit)) == 2  # solution prompts only: both fit
        with caplog.at_level(logging.WARNING, logger="masa_trl.data"):
            kept = filter_long_prompts(dataset, tokenizer, short_meta, meta_kwargs=meta_prompt_kwargs())
        assert kept["problem"] == ["What is 2 + 3?"]
        assert kept.column_names == ["problem", "answer"]
        assert (
            f"Dropped 1 of 2 problems whose solution or meta prompt is longer than max_prompt_length={short_meta}"
            in (caplog.text)
        )

    def test_filter_that_drops_everything_names_the_setting(self, tokenizer):
        dataset = Dataset.from_dict({"problem": ["What is 2 + 3?"], "answer": ["5"]})
        with pytest.raises(ValueError, match="--max_prompt_length"):
            filter_long_prompts(dataset, tokenizer, 5, meta_kwargs=meta_prompt_kwargs())

    def test_no_limit_keeps_everything(self, tokenizer):
        dataset = Dataset.from_dict({"problem": ["x" * 5000], "answer": ["5"]})
        assert filter_long_prompts(dataset, tokenizer, None) is dataset

    def test_meta_prompt_kwargs_follow_the_config(self):
        from masa_trl import MASAConfig

        args = MASAConfig(
            output_dir="unused", use_cpu=True, bf16=False, max_completion_length=256, meta_min_length=16,
            pass_rate_scale=16, per_device_train_batch_size=8, num_generations=8, num_meta_generations=8,
        )  # fmt: skip
        kwargs = meta_prompt_kwargs(args)
        assert (kwargs["max_length"], kwargs["min_length"], kwargs["pass_rate_scale"]) == (256, 16, 16)
        assert meta_prompt_kwargs(max_length=512)["max_length"] == 512


def test_prepare_problems_filters_and_truncates(tmp_path, tokenizer):
    rows = [{"problem": f"What is {i} + {i}?", "answer": str(2 * i)} for i in range(10)]
    data_args = ProblemDataArguments(
        dataset_name=str(write_jsonl(tmp_path / "train.jsonl", rows)), max_prompt_length=2048, max_train_samples=4
    )
    dataset = prepare_problems(data_args, tokenizer, meta_kwargs=meta_prompt_kwargs())
    assert dataset["answer"] == ["0", "2", "4", "6"]


def test_hub_dataset_id(tmp_path):
    assert hub_dataset_id("agentica-org/DeepScaleR-Preview-Dataset") == "agentica-org/DeepScaleR-Preview-Dataset"
    assert hub_dataset_id(str(write_jsonl(tmp_path / "train.jsonl", ROWS))) is None
