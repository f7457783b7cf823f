"""The evaluation run: scripted generations with hand-checkable numbers, resume, rescoring, backends, CLI, report."""

import json
import sys
import types
from typing import ClassVar

import pytest

from evaluation.__main__ import main
from evaluation.benchmarks import BOXED_INSTRUCTION, load_benchmark
from evaluation.generate import Backend, Completion, GenerationRequest, SamplingConfig, make_backend
from evaluation.report import markdown_table
from evaluation.runner import EvalConfig, Evaluator, ResumeMismatchError, run_evaluation


class CharTokenizer:
    """One token per character; enough for `encode_prompt` and for a scripted backend to read its prompts."""

    chat_template = "<role>content"
    eos_token_id = 0

    def apply_chat_template(self, messages, add_generation_prompt=True, tokenize=False):
        return "".join(f"<{m['role']}>{m['content']}" for m in messages) + (
            "<assistant>" if add_generation_prompt else ""
        )

    def __call__(self, text, add_special_tokens=True):
        return {"input_ids": [ord(ch) for ch in text]}

    def decode(self, ids, skip_special_tokens=True):
        return "".join(map(chr, ids))


class ScriptedBackend(Backend):
    """Completions from `script(problem, sample_idx, prompt) -> (text, finish_reason)`; can fail after some calls."""

    name = "scripted"

    def __init__(self, problems, script, fail_after_calls=None):
        self.tokenizer = CharTokenizer()
        self.problems = sorted(problems, key=lambda p: -len(p.problem))
        self.script = script
        self.fail_after_calls = fail_after_calls
        self.calls = 0
        self.requests: list[tuple[str, list[int]]] = []  # (problem_id, sample indices)
        self.prompts: list[str] = []

    def _problem(self, prompt):
        return next(p for p in self.problems if p.problem in prompt)

    def generate(self, requests, sampling):
        if self.fail_after_calls is not None and self.calls >= self.fail_after_calls:
            raise RuntimeError("simulated interruption")
        self.calls += 1
        out = []
        for request in requests:
            prompt = self.tokenizer.decode(request.prompt_ids)
            problem = self._problem(prompt)
            self.requests.append((problem.problem_id, list(request.sample_indices)))
            self.prompts.append(prompt)
            completions = []
            for idx in request.sample_indices:
                text, finish = self.script(problem, idx, prompt)
                completions.append(Completion(text, len(text), finish))
            out.append(completions)
        return out

    @property
    def samples(self):
        return sum(len(indices) for _, indices in self.requests)


def _all_problems(*names):
    return [p for name in names for p in load_benchmark(name, source="fixtures")]


def exact_script(problem, idx, prompt):
    """aime24: the j-th problem has j correct samples of 4 (wrong ones truncated); amc23: one correct sample each;
    gpqa: always right; others: always wrong."""
    position = int(problem.metadata["index"])
    if problem.benchmark == "aime24":
        if idx < position:
            return f"Thinking... so the answer is \\boxed{{{problem.answer}}}.", "stop"
        return "Thinking... \\boxed{12345", "length"
    if problem.benchmark == "amc23":
        return (f"\\boxed{{{problem.answer}}}" if idx == position % 4 else "\\boxed{-1}"), "stop"
    if problem.kind == "choice":
        return f"The answer is \\boxed{{{problem.answer}}}.", "stop"
    return "\\boxed{12345}", "stop"


def _config(tmp_path, **kwargs):
    defaults = dict(
        model="scripted-model",
        benchmarks="aime24",
        output_dir=str(tmp_path),
        n=4,
        ks=(1, 2, 4),
        data_source="fixtures",
        progress=False,
        plot=False,
    )
    return EvalConfig(**(defaults | kwargs))


def test_scripted_run_gives_exact_numbers(tmp_path):
    backend = ScriptedBackend(_all_problems("aime24", "amc23", "gpqa_diamond"), exact_script)
    config = _config(tmp_path, benchmarks="aime24,amc23,gpqa_diamond", scorers=("math_verify", "paper"))
    summary = run_evaluation(config, backend=backend)

    aime = summary["benchmarks"]["aime24"]
    for scorer in ("math_verify", "paper"):
        scores = aime["scores"][scorer]
        assert scores["pass@1"] == pytest.approx(0.5)  # (0 + 1 + 2 + 3 + 4) / 4 / 5
        assert scores["pass@2"] == pytest.approx((0 + 1 / 2 + 5 / 6 + 1 + 1) / 5)
        assert scores["pass@4"] == pytest.approx(0.8)  # 4 of 5 problems solved at least once
        amc = summary["benchmarks"]["amc23"]["scores"][scorer]
        assert (amc["pass@1"], amc["pass@2"], amc["pass@4"]) == pytest.approx((0.25, 0.5, 1.0))
        assert summary["benchmarks"]["gpqa_diamond"]["scores"][scorer]["pass@1"] == 1.0
        # The average covers the in-domain math sets only.
        assert summary["average"][scorer]["pass@1"] == pytest.approx((0.5 + 0.25) / 2)
        assert summary["average"][scorer]["pass@4"] == pytest.approx((0.8 + 1.0) / 2)
    assert aime["truncated_rate"] == pytest.approx(10 / 20)
    assert aime["num_samples"] == 20 and aime["per_problem"]["3"] == {
        "n": 4,
        "correct": {"math_verify": 2, "paper": 2},
    }
    assert summary["average"]["benchmarks"] == ["aime24", "amc23"]

    run_dir = tmp_path / "scripted-model"
    records = [json.loads(line) for line in (run_dir / "records" / "aime24.jsonl").read_text().splitlines()]
    assert len(records) == 20
    assert {(r["problem_id"], r["sample_idx"]) for r in records} == {
        (str(i), s) for i in range(1, 6) for s in range(4)
    }
    assert all(set(r["scores"]) == {"math_verify", "paper"} for r in records)
    # Every prompt got the instruction through the chat template.
    assert all(BOXED_INSTRUCTION in p for p in backend.prompts if "A)" not in p)
    assert json.loads((run_dir / "summary.json").read_text())["primary_scorer"] == "math_verify"
    report = (run_dir / "results.md").read_text()
    assert "| scripted-model | Pass@1 | 50.00 | 25.00 | 37.50 | 100.00 |" in report
    assert "Scorer: **paper**" in report and "Scorer: **math_verify**" in report


def test_interrupted_run_resumes_where_it_stopped(tmp_path):
    problems = _all_problems("aime24")
    config = _config(tmp_path, n=2, ks=(1, 2), chunk_size=1)
    first = ScriptedBackend(problems, exact_script, fail_after_calls=3)
    with pytest.raises(RuntimeError, match="simulated interruption"):
        run_evaluation(config, backend=first)
    path = tmp_path / "scripted-model" / "records" / "aime24.jsonl"
    assert len(path.read_text().splitlines()) == 6  # three problems x two samples, flushed

    second = ScriptedBackend(problems, exact_script)
    evaluator = Evaluator(config, backend=second)
    summary = evaluator.run()
    assert second.requests == [("4", [0, 1]), ("5", [0, 1])]  # only the unfinished problems
    assert evaluator.generated_samples == 4
    assert summary["benchmarks"]["aime24"]["num_samples"] == 10

    # Sample-level resume: drop one sample and cut the next record short, as a kill mid-write would.
    lines = path.read_text().splitlines()
    kept = [line for line in lines if json.loads(line)["problem_id"] != "2" or json.loads(line)["sample_idx"] != 1]
    path.write_text("\n".join(kept) + "\n" + '{"problem_id": "5", "sam')
    third = ScriptedBackend(problems, exact_script)
    summary = run_evaluation(config, backend=third)
    assert third.requests == [("2", [1])]
    assert summary["benchmarks"]["aime24"]["num_samples"] == 10
    assert summary["benchmarks"]["aime24"]["scores"]["math_verify"]["pass@1"] == pytest.approx(
        (0 + 1 + 2 + 2 + 2) / 10
    )

    # A run with the same settings and nothing left to do generates nothing.
    fourth = ScriptedBackend(problems, exact_script)
    run_evaluation(config, backend=fourth)
    assert fourth.calls == 0


def test_resume_checks_settings_grows_n_and_adds_scorers(tmp_path):
    problems = _all_problems("aime24")
    run_evaluation(_config(tmp_path, n=2, ks=(1, 2)), backend=ScriptedBackend(problems, exact_script))
    with pytest.raises(ResumeMismatchError, match="temperature"):
        run_evaluation(_config(tmp_path, n=2, temperature=1.0), backend=ScriptedBackend(problems, exact_script))

    # More samples: only the new ones are generated.
    backend = ScriptedBackend(problems, exact_script)
    summary = run_evaluation(_config(tmp_path, n=4), backend=backend)
    assert backend.samples == 10 and all(indices == [2, 3] for _, indices in backend.requests)
    assert summary["benchmarks"]["aime24"]["scores"]["math_verify"]["pass@1"] == pytest.approx(0.5)

    # Another scorer: the records are rescored in place, nothing is generated.
    backend = ScriptedBackend(problems, exact_script)
    summary = run_evaluation(_config(tmp_path, n=4, scorers=("paper", "math_verify")), backend=backend)
    assert backend.calls == 0
    assert summary["primary_scorer"] == "paper"
    assert summary["benchmarks"]["aime24"]["scores"]["paper"]["pass@1"] == pytest.approx(0.5)
    path = tmp_path / "scripted-model" / "records" / "aime24.jsonl"
    assert all("paper" in json.loads(line)["scores"] for line in path.read_text().splitlines())

    # --overwrite starts afresh.
    backend = ScriptedBackend(problems, exact_script)
    run_evaluation(_config(tmp_path, n=2, temperature=1.0, overwrite=True), backend=backend)
    assert backend.samples == 10


def test_markdown_table_with_relative_gain():
    def summary(name, values):
        benchmarks = {
            bench: {
                "display_name": display,
                "in_domain": bench != "gpqa",
                "scores": {"mv": {"pass@1": v, "pass@32": w}},
            }
            for (bench, display), (v, w) in zip(
                [("aime24", "AIME24"), ("amc23", "AMC23"), ("gpqa", "GPQA-D")], values, strict=True
            )
        }
        return {"run_name": name, "primary_scorer": "mv", "scorers": {"mv": ""}, "benchmarks": benchmarks}

    grpo = summary("GRPO", [(0.20, 0.50), (0.40, 0.80), (0.30, 0.90)])
    masa = summary("MASA", [(0.30, 0.50), (0.50, 0.90), (0.00, 0.90)])
    table = markdown_table([grpo, masa])
    lines = table.splitlines()
    assert lines[0] == "| Model | Metric | AIME24 | AMC23 | Avg. | GPQA-D |"
    assert "| GRPO | Pass@1 | 20.00 | 40.00 | 30.00 | 30.00 |" in lines
    assert "| MASA | Pass@1 | 30.00 | 50.00 | 40.00 | 0.00 |" in lines
    assert "| Δ MASA vs GRPO | Pass@1 | +50.0% | +25.0% | +33.3% | -100.0% |" in lines
    assert "|  | Pass@32 | +0.0% | +12.5% | +7.7% | +0.0% |" in lines
    with pytest.raises(ValueError, match="no scores from scorer"):
        markdown_table([grpo], scorer="paper")


# ---------------------------------------------------------------------------------------------------------------
# vLLM, through a fake module (vllm is not installed here)


class FakeSamplingParams:
    def __init__(self, **kwargs):
        self.kwargs = kwargs


class FakeLLM:
    instances: ClassVar[list["FakeLLM"]] = []

    def __init__(self, **kwargs):
        self.kwargs = kwargs
        self.calls = []
        FakeLLM.instances.append(self)

    def get_tokenizer(self):
        return CharTokenizer()

    def generate(self, prompts, sampling_params=None, use_tqdm=True):
        self.calls.append((prompts, sampling_params))
        outputs = []
        for prompt, params in zip(prompts, sampling_params, strict=True):
            text = "".join(map(chr, prompt["prompt_token_ids"]))
            answer = "66" if "$n^2 + n$" in text else "0"
            outs = [
                types.SimpleNamespace(text=f"\\boxed{{{answer}}}", token_ids=[1, 2, 3], finish_reason="stop")
                for _ in range(params.kwargs["n"] - 1)
            ]
            outs.append(types.SimpleNamespace(text="\\boxed{", token_ids=[1] * 7, finish_reason="length"))
            outputs.append(types.SimpleNamespace(outputs=outs))
        return outputs


@pytest.fixture
def fake_vllm(monkeypatch):
    module = types.ModuleType("vllm")
    module.LLM, module.SamplingParams = FakeLLM, FakeSamplingParams
    monkeypatch.setitem(sys.modules, "vllm", module)
    FakeLLM.instances.clear()
    return module


def test_vllm_backend_with_a_fake_vllm(fake_vllm):
    backend = make_backend("vllm", "some/model", tensor_parallel_size=2, max_model_len=20000, seed=3)
    llm = FakeLLM.instances[-1]
    assert llm.kwargs | {"tokenizer": None} == {
        "model": "some/model",
        "tokenizer": None,
        "tensor_parallel_size": 2,
        "dtype": "bfloat16",
        "gpu_memory_utilization": 0.9,
        "seed": 3,
        "trust_remote_code": False,
        "max_model_len": 20000,
    }
    requests = [GenerationRequest([104, 105], 3, seed=11), GenerationRequest([106], 2, seed=12, max_new_tokens=5)]
    out = backend.generate(requests, SamplingConfig(temperature=0.6, top_p=1.0, max_new_tokens=100))
    prompts, params = llm.calls[-1]
    assert prompts == [{"prompt_token_ids": [104, 105]}, {"prompt_token_ids": [106]}]
    assert params[0].kwargs == {"n": 3, "temperature": 0.6, "top_p": 1.0, "max_tokens": 100, "seed": 11}
    assert params[1].kwargs["max_tokens"] == 5 and params[1].kwargs["n"] == 2
    assert [len(c) for c in out] == [3, 2]
    assert out[0][-1].finish_reason == "length" and out[0][-1].num_tokens == 7


def test_run_with_the_vllm_backend(tmp_path, fake_vllm):
    config = _config(tmp_path, backend="vllm", tensor_parallel_size=4, n=4, chunk_size=64)
    summary = run_evaluation(config)
    llm = FakeLLM.instances[-1]
    assert llm.kwargs["tensor_parallel_size"] == 4 and llm.kwargs["model"] == "scripted-model"
    assert len(llm.calls) == 1  # one call for the whole chunk of five problems
    scores = summary["benchmarks"]["aime24"]["scores"]["math_verify"]
    assert scores["pass@1"] == pytest.approx(3 / 4 / 5)  # problem 1: three of four samples correct
    assert scores["pass@4"] == pytest.approx(1 / 5)
    assert summary["benchmarks"]["aime24"]["truncated_rate"] == pytest.approx(0.25)
    assert summary["config"]["backend"] == "vllm"


def test_vllm_missing_gives_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)
    with pytest.raises(ImportError, match="--backend transformers"):
        make_backend("vllm", "some/model")


# ---------------------------------------------------------------------------------------------------------------
# Command line


def test_cli_errors(tmp_path, capsys):
    assert main(["--model", "m", "--benchmarks", "aime24,aime99", "--output-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "unknown benchmark 'aime99'" in err and "olympiadbench" in err and "gpqa_diamond" in err

    bad = tmp_path / "mine.jsonl"
    bad.write_text(json.dumps({"question": "1+1?", "target": "2"}) + "\n")
    assert main(["--model", "m", "--data-file", str(bad), "--output-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "lacks column(s) 'problem', 'answer'" in err and "'question', 'target'" in err

    assert main(["list"]) == 0
    assert "HuggingFaceH4/MATH-500" in capsys.readouterr().out


def test_cli_end_to_end_with_the_tiny_model(tiny_model_dir, tmp_path, capsys):
    """A real CPU run of the random tiny model: checks the pipeline, counts, ranges and files, not accuracy."""
    args = ["--model", str(tiny_model_dir), "--benchmarks", "aime24,olympiadbench,gpqa", "--fixtures"]
    args += ["--n", "2", "--k", "1,2,32", "--max-new-tokens", "16", "--backend", "transformers", "--batch-size", "8"]
    args += ["--scorers", "math_verify,paper", "--output-dir", str(tmp_path), "--run-name", "tiny", "--no-progress"]
    args += ["--meta", "--meta-n", "1", "--meta-max-new-tokens", "16"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "| Model | Metric | AIME24 | Olympiad. | Avg. | GPQA-D |" in out

    run_dir = tmp_path / "tiny"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["config"]["backend"] == "transformers"
    for name, count in (("aime24", 5), ("olympiadbench", 6), ("gpqa_diamond", 6)):
        records = [json.loads(line) for line in (run_dir / "records" / f"{name}.jsonl").read_text().splitlines()]
        assert len(records) == 2 * count
        assert all(0 < r["num_tokens"] <= 16 and r["finish_reason"] in ("stop", "length") for r in records)
        bench = summary["benchmarks"][name]
        assert bench["num_problems"] == count and bench["num_samples"] == 2 * count
        for scorer in ("math_verify", "paper"):
            scores = bench["scores"][scorer]
            assert set(scores) == {"pass@1", "pass@2", "no_answer_rate"}  # pass@32 > n is skipped
            assert 0.0 <= scores["pass@1"] <= scores["pass@2"] <= 1.0
    assert (run_dir / "results.md").is_file() and (run_dir / "config.json").is_file()
    # Meta-awareness: one (garbage) meta answer per problem, parsed or not, and a plot per benchmark.
    meta = summary["meta"]["benchmarks"]
    assert set(meta) == {"aime24", "olympiadbench", "gpqa_diamond", "all"}
    assert meta["all"]["meta_samples"] == 17 and 0.0 <= meta["all"]["meta_parse_rate"] <= 1.0
    assert len((run_dir / "meta_records" / "aime24.jsonl").read_text().splitlines()) == 5
    assert (run_dir / "meta_all.png").is_file()

    # Comparing two runs (here the same one twice) gives the gain rows.
    assert main(["compare", str(run_dir), str(run_dir / "summary.json"), "--names", "a,b", "--scorer", "paper"]) == 0
    out = capsys.readouterr().out
    assert "Scorer: **paper**" in out and "| Δ b vs a | Pass@1 |" in out


@pytest.mark.vllm
def test_real_vllm_on_the_tiny_model(tiny_model_dir, tmp_path):
    """Needs the vllm(-cpu) environment; deselected by default (`-m vllm` runs it)."""
    pytest.importorskip("vllm")
    config = EvalConfig(
        model=str(tiny_model_dir),
        benchmarks="aime24",
        output_dir=str(tmp_path),
        n=2,
        ks=(1, 2),
        max_new_tokens=16,
        data_source="fixtures",
        backend="vllm",
        dtype="float32",
        max_model_len=1024,
        gpu_memory_utilization=0.3,  # on vLLM's CPU backend: the share of host memory reserved
        progress=False,
    )
    summary = run_evaluation(config)
    bench = summary["benchmarks"]["aime24"]
    assert bench["num_samples"] == 10 and 0 < bench["mean_tokens"] <= 16
    assert summary["config"]["backend"] == "vllm"
