"""Newcomer problems of the evaluation CLI: a folder without a model, run folders left behind by failed starts,
defaults beyond a small model's context, `compare` describing every run, truthful `--help` for `--no-...` flags."""

import json
import logging
import re
import shutil

import pytest
from test_evaluation_run import ScriptedBackend, _all_problems, _config, exact_script

from evaluation.__main__ import build_parser, main
from evaluation.runner import RecordFile, run_evaluation


def _quick_args(model, output_dir, *extra):
    return [
        "--model",
        str(model),
        "--benchmarks",
        "aime24",
        "--fixtures",
        "--limit",
        "1",
        "--n",
        "1",
        "--k",
        "1",
        "--backend",
        "transformers",
        "--output-dir",
        str(output_dir),
        "--no-progress",
        *extra,
    ]


def test_a_folder_without_a_model_is_named_with_its_checkpoints(tiny_model_dir, tmp_path, capsys):
    """A training output_dir holds only checkpoint-N folders: the error says so and lists them, latest step last,
    and the failed start leaves no run folder behind, so the retry needs no --overwrite."""
    train_dir = tmp_path / "train-out"
    for step in (500, 1000, 50):
        (train_dir / f"checkpoint-{step}").mkdir(parents=True)
    (train_dir / "runs").mkdir()
    runs = tmp_path / "eval"
    assert main(_quick_args(train_dir, runs, "--run-name", "mine", "--max-new-tokens", "4")) == 2
    err = capsys.readouterr().err
    assert f"no model in {train_dir}" in err
    assert "sentencepiece" not in err
    listed = re.findall(r"checkpoint-(\d+)", err)
    assert listed[:3] == ["50", "500", "1000"]  # sorted by step, not by name
    assert f"--model {train_dir}/checkpoint-1000" in err
    assert not (runs / "mine").exists()

    # The retry, with the model this time, under the same run name: no --overwrite needed.
    assert main(_quick_args(tiny_model_dir, runs, "--run-name", "mine", "--max-new-tokens", "4")) == 0
    capsys.readouterr()
    config = json.loads((runs / "mine" / "config.json").read_text())
    assert config["generation"]["model"] == str(tiny_model_dir)

    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(_quick_args(empty, runs)) == 2
    err = capsys.readouterr().err
    assert f"no model in {empty}" in err and "config.json" in err
    assert not (runs / "empty").exists()


def test_a_run_that_fails_before_its_first_record_leaves_no_folder(tmp_path):
    problems = _all_problems("aime24")
    broken = ScriptedBackend(problems, exact_script, fail_after_calls=0)
    with pytest.raises(RuntimeError, match="simulated interruption"):
        run_evaluation(_config(tmp_path, n=2, ks=(1, 2)), backend=broken)
    assert not (tmp_path / "scripted-model").exists()

    # Other settings on the retry are fine: there was no record to protect.
    summary = run_evaluation(
        _config(tmp_path, n=2, ks=(1, 2), temperature=1.0), backend=ScriptedBackend(problems, exact_script)
    )
    assert summary["benchmarks"]["aime24"]["num_samples"] == 10

    # A failure after records were written keeps them (resume), as before.
    late = ScriptedBackend(problems, exact_script, fail_after_calls=1)
    with pytest.raises(RuntimeError, match="simulated interruption"):
        run_evaluation(_config(tmp_path, n=4, temperature=1.0, chunk_size=1), backend=late)
    assert len((tmp_path / "scripted-model" / "records" / "aime24.jsonl").read_text().splitlines()) == 12


def test_an_unknown_scorer_is_reported_before_the_run_folder_exists(tmp_path):
    with pytest.raises(ValueError, match="unknown scorer 'mathverfy'"):
        run_evaluation(
            _config(tmp_path, scorers=("mathverfy",)), backend=ScriptedBackend(_all_problems("aime24"), exact_script)
        )
    assert not (tmp_path / "scripted-model").exists()


def test_defaults_are_capped_to_a_small_models_context(tiny_model_dir, tmp_path, caplog):
    """The paper's 16,384 new tokens do not fit a model of 120 positions: the budget becomes the context minus the
    longest prompt, with a warning that names both numbers and the flag."""
    small = tmp_path / "small-context"
    shutil.copytree(tiny_model_dir, small)
    config = json.loads((small / "config.json").read_text())
    config["max_position_embeddings"] = 120
    (small / "config.json").write_text(json.dumps(config))

    runs = tmp_path / "eval"
    args = _quick_args(small, runs, "--limit", "2", "--n", "2", "--run-name", "small")
    with caplog.at_level(logging.WARNING, logger="evaluation"):
        assert main(args) == 0
    records = list(RecordFile(runs / "small" / "records" / "aime24.jsonl").records.values())
    longest = max(r["prompt_tokens"] for r in records)
    cap = 120 - longest
    assert len(records) == 4 and all(r["prompt_tokens"] + r["num_tokens"] <= 120 for r in records)
    assert json.loads((runs / "small" / "config.json").read_text())["generation"]["max_new_tokens"] == cap
    warning = next(r.getMessage() for r in caplog.records if "16384" in r.getMessage())
    assert str(cap) in warning and "120" in warning and str(longest) in warning and "--max-new-tokens" in warning

    # The same command resumes (the cap is the same), with nothing left to generate.
    caplog.clear()
    assert main(args) == 0
    summary = json.loads((runs / "small" / "summary.json").read_text())
    assert summary["generated_samples"] == 0 and summary["config"]["max_new_tokens"] == cap


def test_context_length_follows_the_config_like_vllm(tmp_path):
    from evaluation.generate import model_context_length

    model = tmp_path / "m"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"max_position_embeddings": 4096}))
    assert model_context_length(str(model)) == 4096
    yarn = {"factor": 4.0, "rope_type": "yarn", "original_max_position_embeddings": 32768}
    (model / "config.json").write_text(json.dumps({"max_position_embeddings": 40960, "rope_scaling": yarn}))
    assert model_context_length(str(model)) == 131072
    (model / "config.json").write_text(json.dumps({"text_config": {"max_position_embeddings": 8192}}))
    assert model_context_length(str(model)) == 8192
    assert model_context_length("no-such/hub-model") is None  # offline in the tests: unknown, so no cap


def test_compare_describes_every_run(tmp_path, capsys):
    problems = _all_problems("aime24")
    run_evaluation(_config(tmp_path, run_name="cold", n=2, ks=(1, 2)), backend=ScriptedBackend(problems, exact_script))
    run_evaluation(
        _config(tmp_path, run_name="hot", n=2, ks=(1, 2), temperature=1.0, max_new_tokens=512),
        backend=ScriptedBackend(problems, exact_script),
    )
    assert main(["compare", str(tmp_path / "cold"), str(tmp_path / "hot")]) == 0
    out = capsys.readouterr().out
    settings = out.split("| Model | Metric |")[0]
    # The settings that differ, per run; the shared ones once.
    assert (
        "| Run | Temperature | Max new tokens |\n|---|---|---|\n| cold | 0.6 | 16384 |\n| hot | 1.0 | 512 |"
        in settings
    )
    assert settings.count("n = 2 samples per problem") == 1 and "`scripted-model`" in settings

    # The same run twice: every setting is shared.
    assert main(["compare", str(tmp_path / "cold"), str(tmp_path / "cold"), "--names", "a,b"]) == 0
    out = capsys.readouterr().out
    assert "temperature 0.6" in out and "| a |" not in out.split("| Model | Metric |")[0]


def test_records_with_unicode_line_separators_survive_a_reload(tmp_path):
    """A random model's text holds U+2028, U+0085 and the like, which `str.splitlines` would split a record at."""
    path = tmp_path / "records.jsonl"
    texts = ["a\u2028b", "c\x85d\x1ce", "f\u2029g\rh"]
    RecordFile(path).append([{"problem_id": "1", "sample_idx": i, "completion": t} for i, t in enumerate(texts)])
    reloaded = RecordFile(path)
    assert [reloaded.records[("1", i)]["completion"] for i in range(3)] == texts


def test_help_of_negation_flags_is_truthful():
    text = build_parser().format_help()
    assert "(default: True)" not in text and "(default: False)" not in text
    flat = " ".join(text.split())
    for flag, feature in (
        ("--no-chat-template", "chat template"),
        ("--no-plot", "plot"),
        ("--no-progress", "progress"),
    ):
        assert re.search(rf"{flag} [^()]*\(default: {feature} on; {flag} turns it off\)", flat), flag
    assert re.search(r"--fixtures .*?\(default: off\)", flat)


def _looping_script(problem, idx, prompt):
    """An MBPP program that never ends: only the sandbox's per-program timeout stops it."""
    return "Here is my solution.\n```python\nwhile True:\n    pass\n```", "stop"


def test_code_timeout_reaches_the_scorer_and_the_saved_config(tmp_path, monkeypatch):
    """`--code-timeout` is each scorer's per-program sandbox limit, and it is saved with the run's settings."""
    from evaluation import code_benchmarks, runner

    backend = ScriptedBackend(_all_problems("mbpp"), _looping_script)
    real_run, real_make, real_batch = runner.run_evaluation, runner.make_scorer, code_benchmarks.score_batch
    made, batches = [], []

    def make_scorer(name, **kwargs):
        scorer = real_make(name, **kwargs)
        made.append((scorer.name, kwargs.get("code_timeout"), scorer.code_timeout_s))
        return scorer

    def score_batch(problems, completions, **kwargs):
        batches.append(kwargs.get("timeout_s"))
        return real_batch(problems, completions, **kwargs)

    monkeypatch.setattr(runner, "run_evaluation", lambda config: real_run(config, backend=backend))
    monkeypatch.setattr(runner, "make_scorer", make_scorer)
    monkeypatch.setattr(code_benchmarks, "score_batch", score_batch)
    args = ["--model", "scripted-model", "--benchmarks", "mbpp", "--fixtures", "--limit", "1", "--n", "1", "--k", "1"]
    args += ["--scorers", "math_verify,paper", "--output-dir", str(tmp_path), "--no-progress", "--code-timeout", "1.5"]
    assert main(args) == 0
    assert made == [("math_verify", 1.5, 1.5), ("paper", 1.5, 1.5)]
    assert batches == [1.5, 1.5]
    summary = json.loads((tmp_path / "scripted-model" / "summary.json").read_text())
    assert summary["config"]["code_timeout"] == 1.5
    assert json.loads((tmp_path / "scripted-model" / "config.json").read_text())["config"]["code_timeout"] == 1.5
    # The endless program was stopped by that limit, not the default 10 s.
    assert summary["scorer_stats"]["math_verify"]["timeouts"] == 1
    assert build_parser().parse_args(["--model", "m"]).code_timeout == code_benchmarks.DEFAULT_TIMEOUT_S == 10


@pytest.mark.parametrize("value", ["0", "-2", "nan", "inf", "ten"])
def test_a_bad_code_timeout_is_an_error_naming_the_flag(tmp_path, capsys, value):
    with pytest.raises(SystemExit) as exc:
        main(["--model", "m", "--output-dir", str(tmp_path), "--code-timeout", value])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "argument --code-timeout" in err and repr(value) in err
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("value", [0, -1.0, float("nan"), "soon"])
def test_the_run_config_checks_code_timeout(tmp_path, value):
    with pytest.raises(ValueError, match=r"code_timeout \(--code-timeout\) must be"):
        _config(tmp_path, code_timeout=value)
    assert _config(tmp_path, code_timeout="2").code_timeout == 2.0
