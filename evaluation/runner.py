"""The evaluation run: load benchmarks, generate (resumably), score, compute pass@k, write records and reports.

Output layout of a run (`<output_dir>/<run_name>/`):

    config.json                 the settings that shaped the generations (checked on resume)
    records/<benchmark>.jsonl   one line per (problem, sample): completion, tokens, finish reason, scores
    meta_records/<bench>.jsonl  one line per (problem, meta sample) with the parsed prediction (--meta)
    summary.json                metrics per benchmark and scorer, averages, scorer timeouts, meta-awareness
    results.md                  the Markdown report (Table 1 layout), and meta_<benchmark>.png plots

Before the run folder is made, the model path, the scorers and the data are checked, and the new-token budgets are
capped to what the model's context leaves after the longest prompt (with a warning); a run that fails before its
first record removes the folder again, so its retry needs no `--overwrite`.

Records are appended and flushed after every generation chunk. A rerun with the same settings skips every
(problem, sample) pair already on disk, so an interrupted run resumes where it stopped; `n` may grow between runs
(only the new samples are generated). Records that lack a requested scorer's verdict are rescored in place.
"""

import dataclasses
import json
import logging
import math
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evaluation import code_benchmarks
from evaluation.benchmarks import (
    PROMPT_STYLES,
    BenchmarkSpec,
    Problem,
    get_benchmark,
    item_seed,
    load_benchmark,
    resolve_benchmarks,
)
from evaluation.generate import (
    Backend,
    Completion,
    GenerationRequest,
    SamplingConfig,
    check_model_path,
    encode_prompt,
    load_tokenizer,
    model_context_length,
    resolve_backend_name,
)
from evaluation.passk import mean_accuracy, mean_pass_at_k, valid_ks
from evaluation.scoring import Scorer, make_scorer, scorer_name


logger = logging.getLogger(__name__)

# Settings that change what gets generated; a resumed run must match them (n may grow).
GENERATION_KEYS = (
    "model",
    "temperature",
    "top_p",
    "top_k",
    "max_new_tokens",
    "seed",
    "prompt_style",
    "chat_template",
    "system_prompt",
    "notion_feedin",
    "gpqa_shuffle",
)
META_KEYS = ("meta_max_new_tokens", "meta_temperature", "pass_rate_scale", "meta_max_length")


class ResumeMismatchError(RuntimeError):
    pass


@dataclass
class EvalConfig:
    """Settings of one evaluation run; the defaults follow the paper (n = 32, T = 0.6, top-p 1.0, 16k tokens)."""

    model: str
    benchmarks: str | list[str] = "math"
    output_dir: str = "outputs/eval"
    run_name: str | None = None
    # sampling
    n: int = 32
    temperature: float = 0.6
    top_p: float = 1.0
    top_k: int = -1
    max_new_tokens: int = 16384
    seed: int = 0
    ks: tuple[int, ...] = (1, 32)
    # prompting
    prompt_style: str = "instruct"
    chat_template: bool = True
    system_prompt: str | None = None
    # scoring
    scorers: tuple[str, ...] = ("math_verify",)
    scorer_timeout: float | None = None
    code_timeout: float = code_benchmarks.DEFAULT_TIMEOUT_S  # seconds per sandboxed program (coding sets)
    # data
    data_source: str = "auto"  # auto | hub | fixtures
    data_files: dict[str, str] = field(default_factory=dict)  # benchmark name -> local file
    custom_benchmarks: list[BenchmarkSpec] = field(default_factory=list)
    limit: int | None = None
    gpqa_shuffle: str = "item"
    # backend
    backend: str = "auto"
    tensor_parallel_size: int = 1
    dtype: str = "auto"
    max_model_len: int | None = None
    gpu_memory_utilization: float = 0.9
    batch_size: int = 16
    chunk_size: int | None = None
    trust_remote_code: bool = False
    # meta-awareness
    meta: bool = False
    meta_n: int = 4
    meta_max_new_tokens: int = 2048
    meta_temperature: float | None = None
    meta_max_length: int = 8192
    pass_rate_scale: int = 8
    notion_feedin: bool = False
    max_notions: int = 5
    plot: bool = True
    # misc
    progress: bool = True
    overwrite: bool = False

    def __post_init__(self):
        if self.prompt_style not in PROMPT_STYLES:
            raise ValueError(f"unknown prompt style {self.prompt_style!r}; choose one of {', '.join(PROMPT_STYLES)}")
        if self.n < 1:
            raise ValueError(f"n must be at least 1, got {self.n}")
        if self.temperature == 0 and self.n > 1:
            logger.warning("temperature 0 is greedy decoding: using n = 1 instead of n = %d", self.n)
            self.n = 1
        if isinstance(self.scorers, str):
            self.scorers = tuple(s for s in self.scorers.split(",") if s.strip())
        if not self.scorers:
            raise ValueError("at least one scorer is needed")
        for name in self.scorers:  # a typo fails here, before a model is loaded or a run folder made
            scorer_name(name)
        self.code_timeout = _positive_seconds(self.code_timeout, "code_timeout (--code-timeout)")

    @property
    def run_dir(self) -> Path:
        name = self.run_name or Path(self.model.rstrip("/")).name or "model"
        return Path(self.output_dir) / name

    def sampling(self) -> SamplingConfig:
        return SamplingConfig(self.temperature, self.top_p, self.top_k, self.max_new_tokens)

    def meta_sampling(self) -> SamplingConfig:
        temperature = self.temperature if self.meta_temperature is None else self.meta_temperature
        return SamplingConfig(temperature, self.top_p, self.top_k, self.meta_max_new_tokens)

    def generation_settings(self, backend_name: str) -> dict[str, Any]:
        settings = {key: getattr(self, key) for key in GENERATION_KEYS}
        if self.meta or self.notion_feedin:
            settings |= {key: getattr(self, key) for key in META_KEYS}
        return settings | {"n": self.n, "backend": backend_name}


def _positive_seconds(value: Any, name: str) -> float:
    """`value` as a finite number of seconds above 0, else a ValueError naming the setting."""
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number of seconds, got {value!r}") from None
    if not (math.isfinite(seconds) and seconds > 0):
        raise ValueError(f"{name} must be a finite number of seconds above 0, got {value!r}")
    return seconds


# ---------------------------------------------------------------------------------------------------------------
# Records


class RecordFile:
    """An append-only JSONL file of per-sample records keyed by `(problem_id, sample_idx)`."""

    def __init__(self, path: Path):
        self.path = path
        self.records: dict[tuple[str, int], dict[str, Any]] = {}
        if path.is_file():
            self._load()

    def _load(self) -> None:
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):  # a write cut short by an interruption: drop the partial line
            keep = data.rfind(b"\n") + 1
            logger.warning("%s: dropping a partial last record (%d bytes)", self.path, len(data) - keep)
            with self.path.open("r+b") as f:
                f.truncate(keep)
            data = data[:keep]
        # Split at "\n" alone: str.splitlines also splits at U+2028, U+0085 and the like, which json.dumps leaves
        # unescaped (ensure_ascii=False) and models do emit, and would tear such a record in two unreadable halves.
        for number, line in enumerate(data.decode("utf-8").split("\n"), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                logger.warning("%s:%d: skipping an unreadable record", self.path, number)
                continue
            self.records[(str(record["problem_id"]), int(record["sample_idx"]))] = record

    def __contains__(self, key: tuple[str, int]) -> bool:
        return key in self.records

    def append(self, records: Sequence[dict[str, Any]]) -> None:
        if not records:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as f:
            for record in records:
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
        for record in records:
            self.records[(str(record["problem_id"]), int(record["sample_idx"]))] = record

    def rewrite(self) -> None:
        """Atomically rewrite the whole file from `records` (after rescoring)."""
        tmp = self.path.with_suffix(".jsonl.tmp")
        with tmp.open("w", encoding="utf-8") as f:
            for record in self.records.values():
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)


def _chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), max(1, size)):
        yield items[start : start + max(1, size)]


def _clean(value: Any) -> Any:
    """JSON-safe copy: NaN / inf become None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


# ---------------------------------------------------------------------------------------------------------------
# The run


class Evaluator:
    """Runs an [`EvalConfig`]; pass `backend` to reuse a loaded model or to script the generations (tests)."""

    def __init__(self, config: EvalConfig, backend: Backend | None = None, tokenizer=None):
        self.config = config
        self._backend = backend
        self._tokenizer = tokenizer
        self._prompt_tokenizer = None  # loaded on its own to measure the prompts before the model is loaded
        self._context_warned = False
        self.generated_samples = 0
        self.generated_meta_samples = 0

    # -- setup ---------------------------------------------------------------------------------------------------

    @property
    def backend(self) -> Backend:
        if self._backend is None:
            from evaluation.generate import make_backend

            c = self.config
            self._backend = make_backend(
                c.backend,
                c.model,
                tensor_parallel_size=c.tensor_parallel_size,
                dtype=c.dtype,
                max_model_len=c.max_model_len,
                gpu_memory_utilization=c.gpu_memory_utilization,
                seed=c.seed,
                batch_size=c.batch_size,
                trust_remote_code=c.trust_remote_code,
                tokenizer=self._prompt_tokenizer,
            )
        return self._backend

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            self._tokenizer = getattr(self._backend, "tokenizer", None) if self._backend is not None else None
        if self._tokenizer is None:
            self._tokenizer = self.backend.tokenizer
        return self._tokenizer

    def specs(self) -> list[BenchmarkSpec]:
        """The selected benchmarks, with `data_files` overriding their source; unselected overridden ones are added."""
        c = self.config
        files = {get_benchmark(name).name: path for name, path in c.data_files.items()}
        specs = resolve_benchmarks(c.benchmarks) if c.benchmarks else []
        specs += [get_benchmark(name) for name in files if name not in {s.name for s in specs}]
        specs = [dataclasses.replace(s, data_file=str(files[s.name])) if s.name in files else s for s in specs]
        return specs + list(c.custom_benchmarks)

    def load_problems(self, spec: BenchmarkSpec) -> list[Problem]:
        c = self.config
        source = "fixtures" if c.data_source == "fixtures" and not spec.data_file else c.data_source
        if spec.data_file and source == "hub":
            source = "auto"
        return load_benchmark(spec, source=source, limit=c.limit, seed=c.seed, gpqa_shuffle=c.gpqa_shuffle)

    def _check_resume(self, run_dir: Path) -> None:
        c = self.config
        path = run_dir / "config.json"
        backend_name = getattr(self._backend, "name", None) or resolve_backend_name(c.backend)
        self.backend_name = backend_name
        current = _clean(c.generation_settings(backend_name))
        # Settings only bind once records were generated with them: a folder left by a failed start does not.
        if path.is_file() and not c.overwrite and _has_records(run_dir):
            previous = json.loads(path.read_text(encoding="utf-8")).get("generation", {})
            diffs = [
                f"{key}: {previous.get(key)!r} -> {current.get(key)!r}"
                for key in GENERATION_KEYS + META_KEYS
                if key in previous and key in current and previous[key] != current[key]
            ]
            if diffs:
                raise ResumeMismatchError(
                    f"{run_dir} holds a run with other generation settings ({'; '.join(diffs)}). "
                    "Pass --overwrite to start afresh, or --run-name for a separate run."
                )
        if c.overwrite:
            for sub in ("records", "meta_records"):
                for file in (run_dir / sub).glob("*.jsonl"):
                    file.unlink()
        run_dir.mkdir(parents=True, exist_ok=True)
        payload = {"generation": current, "config": _clean(self._config_dict())}
        path.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")

    def _config_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self.config)
        data["custom_benchmarks"] = [s.name for s in self.config.custom_benchmarks]
        data["ks"] = list(self.config.ks)
        data["scorers"] = list(self.config.scorers)
        return data

    # -- prompts -------------------------------------------------------------------------------------------------

    def _messages(self, problem: Problem, notions: list[str] | None = None) -> list[dict[str, str]]:
        messages = problem.messages(self.config.prompt_style)
        if notions:
            messages = _add_notion_hint(messages, notions)
        if self.config.system_prompt:
            messages = [{"role": "system", "content": self.config.system_prompt}, *messages]
        return messages

    def _meta_messages(self, problem: Problem) -> list[dict[str, str]]:
        from masa_trl.templates import meta_prompt

        c = self.config
        kwargs = {"system_prompt": c.system_prompt} if c.system_prompt else {}
        return meta_prompt(problem.problem, pass_rate_scale=c.pass_rate_scale, max_length=c.meta_max_length, **kwargs)

    def _encode(self, messages: list[dict[str, str]], tokenizer=None) -> list[int]:
        return encode_prompt(tokenizer or self.tokenizer, messages, chat_template=self.config.chat_template)

    # -- the model's context ---------------------------------------------------------------------------------------

    def _context(self) -> tuple[int | None, str]:
        """The model's context in tokens and where it comes from, without loading the weights."""
        c = self.config
        if self._backend is not None:
            return getattr(self._backend, "max_context", None), "as loaded"
        if c.max_model_len and resolve_backend_name(c.backend) == "vllm":
            return c.max_model_len, "--max-model-len"
        return model_context_length(c.model), "from its config.json"

    def _fit_to_context(self, problems: dict[str, list[Problem]]) -> None:
        """Cap the new-token budgets to what the model's context leaves after the longest prompt, with a warning.

        The paper's defaults (16,384 new tokens) exceed the context of small models (the tiny test model has 2,048
        positions): transformers would generate past the positions the model knows and vLLM stop at its context
        length, both without a word. The cap depends only on the model and the prompts, so a rerun of the same
        command gets the same one and resumes.
        """
        c = self.config
        context, source = self._context()
        items = [p for group in problems.values() for p in group]
        if context is None or not items:
            return
        if self._tokenizer is not None or self._backend is not None:
            tokenizer = self.tokenizer
        else:
            tokenizer = self._prompt_tokenizer = load_tokenizer(c.model, trust_remote_code=c.trust_remote_code)
        budgets = [("max_new_tokens", "--max-new-tokens", "solution", self._messages, "leave that benchmark out")]
        if c.meta or c.notion_feedin:
            budgets.append(
                (
                    "meta_max_new_tokens",
                    "--meta-max-new-tokens",
                    "meta",
                    self._meta_messages,
                    "run without --meta and --notion-feedin",
                )
            )
        changes = {}
        for key, flag, kind, messages_for, way_out in budgets:
            longest, problem = max(
                ((len(self._encode(messages_for(p), tokenizer)), p) for p in items), key=lambda pair: pair[0]
            )
            room = context - longest
            where = f"{problem.benchmark} problem {problem.problem_id}"
            if room < 1:
                raise ValueError(
                    f"the longest {kind} prompt ({longest} tokens, {where}) fills the model's context of {context} "
                    f"tokens ({source}): nothing is left to generate. Use a model with a longer context (or a "
                    f"larger --max-model-len with vLLM), or {way_out}."
                )
            requested = getattr(c, key)
            if requested > room:
                logger.warning(
                    "%s %d does not fit the model's context: %d tokens (%s) minus the longest %s prompt (%d tokens, "
                    "%s) leave %d, so at most %d new tokens are generated. Set %s to %d or less to choose the "
                    "budget yourself.",
                    *(flag, requested, context, source, kind, longest, where, room, room, flag, room),
                )
                changes[key] = room
        if changes:
            self.config = dataclasses.replace(c, **changes)

    def _room(self, prompt_ids: list[int], sampling: SamplingConfig) -> int | None:
        """The new-token budget of one request where its prompt leaves less than `sampling` asks for (else None).

        The budgets were fitted to the longest prompt before the run; only prompts that grow during it (notion
        feed-in appends the predicted notions) can get here.
        """
        context = getattr(self.backend, "max_context", None)
        if context is None or len(prompt_ids) + sampling.max_new_tokens <= context:
            return None
        room = max(1, context - len(prompt_ids))
        if not self._context_warned:
            self._context_warned = True
            logger.warning(
                "a prompt of %d tokens leaves %d of the model's %d-token context: its samples get at most %d new "
                "tokens instead of %d",
                len(prompt_ids),
                room,
                context,
                room,
                sampling.max_new_tokens,
            )
        return room

    # -- generation ----------------------------------------------------------------------------------------------

    def _generate_into(
        self,
        file: RecordFile,
        problems: list[Problem],
        n: int,
        prompt_for,
        sampling: SamplingConfig,
        make_records,
        *,
        desc: str,
        salt: str,
    ) -> int:
        """Generate the missing samples of every problem in chunks; `make_records(pairs)` turns
        `(problem, sample_idx, prompt_ids, Completion)` tuples into records, which are appended after each chunk."""
        pending = []
        for problem in problems:
            missing = [i for i in range(n) if (problem.problem_id, i) not in file]
            if missing:
                pending.append((problem, missing))
        total = sum(len(m) for _, m in pending)
        if not total:
            return 0
        # Records are flushed after each chunk: vLLM wants large chunks (it schedules them itself), transformers
        # about one forward batch.
        chunk = self.config.chunk_size or (
            64 if self.backend.name == "vllm" else max(1, self.config.batch_size // max(1, n))
        )
        from tqdm.auto import tqdm

        generated = 0
        with tqdm(total=total, desc=desc, unit="sample", disable=not self.config.progress, leave=False) as bar:
            for group in _chunks(pending, chunk):
                prompts = [prompt_for(problem) for problem, _ in group]
                requests = [
                    GenerationRequest(
                        ids,
                        len(missing),
                        item_seed(salt, self.config.seed, problem.benchmark, problem.problem_id, missing[0]) % 2**31,
                        max_new_tokens=self._room(ids, sampling),
                        sample_indices=list(missing),
                    )
                    for (problem, missing), ids in zip(group, prompts, strict=True)
                ]
                outputs = self.backend.generate(requests, sampling)
                pairs = []
                for (problem, missing), ids, completions in zip(group, prompts, outputs, strict=True):
                    if len(completions) != len(missing):
                        raise RuntimeError(f"backend returned {len(completions)} completions, expected {len(missing)}")
                    pairs += [(problem, idx, ids, comp) for idx, comp in zip(missing, completions, strict=True)]
                file.append(make_records(pairs))
                generated += len(pairs)
                bar.update(len(pairs))
        return generated

    def _score_records(self, problems_by_id: dict[str, Problem], records: list[dict], scorers: dict[str, Scorer]):
        for name, scorer in scorers.items():
            todo = [r for r in records if name not in r.setdefault("scores", {})]
            if not todo:
                continue
            results = scorer.score([problems_by_id[r["problem_id"]] for r in todo], [r["completion"] for r in todo])
            for record, result in zip(todo, results, strict=True):
                record["scores"][name] = {"correct": result.correct, "extracted": result.extracted}

    # -- main ------------------------------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        specs = self.specs()
        if not specs:
            raise ValueError("no benchmark selected")
        if self._backend is None:
            check_model_path(self.config.model)
        # Load every benchmark before loading the model, so that data errors surface at once.
        problems = {spec.name: self.load_problems(spec) for spec in specs}
        self._fit_to_context(problems)
        run_dir = self.config.run_dir
        self._check_resume(run_dir)
        try:
            return self._run(specs, problems, run_dir)
        except BaseException:
            # A run that fails before its first record (the model does not load, say) leaves no folder behind, so
            # the retry, with other settings perhaps, needs no --overwrite.
            _remove_if_unused(run_dir)
            raise

    def _run(self, specs: list[BenchmarkSpec], problems: dict[str, list[Problem]], run_dir: Path) -> dict[str, Any]:
        c = self.config
        scorers = {}
        for name in c.scorers:
            scorer = make_scorer(name, timeout=c.scorer_timeout, code_timeout=c.code_timeout)
            scorers[scorer.name] = scorer
        primary = next(iter(scorers))
        started = time.time()
        summary: dict[str, Any] = {
            "model": c.model,
            "run_name": run_dir.name,
            "primary_scorer": primary,
            "scorers": {name: s.description for name, s in scorers.items()},
            "config": _clean(self._config_dict() | {"backend": self.backend_name}),
            "benchmarks": {},
        }
        meta_rows: dict[str, list[dict[str, Any]]] = {}
        try:
            for spec in specs:
                items = problems[spec.name]
                by_id = {p.problem_id: p for p in items}
                notions: dict[str, list[str]] = {}
                meta_file = None
                if c.meta or c.notion_feedin:
                    meta_file = self._run_meta(spec, items, run_dir)
                    notions = {
                        pid: agg["notions"][: c.max_notions]
                        for pid, agg in self._aggregate_meta(meta_file, items).items()
                    }
                file = RecordFile(run_dir / "records" / f"{spec.name}.jsonl")
                stale = [r for r in file.records.values() if any(n not in r.get("scores", {}) for n in scorers)]
                stale = [r for r in stale if r["problem_id"] in by_id]
                if stale:
                    logger.info("%s: scoring %d existing records with %s", spec.name, len(stale), ", ".join(scorers))
                    self._score_records(by_id, stale, scorers)
                    file.rewrite()

                def make_records(pairs, _spec=spec, _by_id=by_id):
                    records = [
                        {
                            "benchmark": _spec.name,
                            "problem_id": problem.problem_id,
                            "sample_idx": idx,
                            "gold": problem.answer,
                            "completion": comp.text,
                            "num_tokens": comp.num_tokens,
                            "finish_reason": comp.finish_reason,
                            "prompt_tokens": len(ids),
                            "scores": {},
                        }
                        for problem, idx, ids, comp in pairs
                    ]
                    self._score_records(_by_id, records, scorers)
                    return records

                self.generated_samples += self._generate_into(
                    file,
                    items,
                    c.n,
                    lambda p, _n=notions: self._encode(self._messages(p, _n.get(p.problem_id))),
                    c.sampling(),
                    make_records,
                    desc=spec.name,
                    salt="solution",
                )
                summary["benchmarks"][spec.name] = self._benchmark_metrics(spec, items, file, scorers)
                if c.meta and meta_file is not None:
                    meta_rows[spec.name] = self._meta_rows(meta_file, items, file, primary)
        finally:
            summary["scorer_stats"] = {name: s.stats() for name, s in scorers.items()}
            for scorer in scorers.values():
                scorer.close()
        summary["average"] = self._averages(summary, list(scorers))
        if c.meta:
            summary["meta"] = self._meta_summary(meta_rows, run_dir, primary)
        summary["generated_samples"] = self.generated_samples
        summary["generated_meta_samples"] = self.generated_meta_samples
        summary["elapsed_s"] = round(time.time() - started, 2)
        summary = _clean(summary)
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", "utf-8")
        from evaluation.report import render_report

        (run_dir / "results.md").write_text(render_report(summary), encoding="utf-8")
        return summary

    # -- metrics ---------------------------------------------------------------------------------------------------

    def _benchmark_metrics(self, spec: BenchmarkSpec, items: list[Problem], file: RecordFile, scorers) -> dict:
        c = self.config
        records = [
            file.records[(p.problem_id, i)] for p in items for i in range(c.n) if (p.problem_id, i) in file.records
        ]
        per_problem: dict[str, dict[str, Any]] = {}
        for p in items:
            rs = [file.records[(p.problem_id, i)] for i in range(c.n) if (p.problem_id, i) in file.records]
            per_problem[p.problem_id] = {
                "n": len(rs),
                "correct": {name: sum(bool(r["scores"][name]["correct"]) for r in rs) for name in scorers},
            }
        ns = [v["n"] for v in per_problem.values()]
        scores = {}
        for name in scorers:
            cs = [v["correct"][name] for v in per_problem.values()]
            entry: dict[str, Any] = {"pass@1": mean_accuracy(ns, cs) if ns and min(ns) > 0 else math.nan}
            for k in valid_ks(c.ks, min(ns) if ns else 0):
                if k != 1:
                    entry[f"pass@{k}"] = mean_pass_at_k(ns, cs, k)
            entry["no_answer_rate"] = (
                sum(r["scores"][name]["extracted"] in (None, "") for r in records) / len(records)
                if records
                else math.nan
            )
            scores[name] = entry
        tokens = [r["num_tokens"] for r in records]
        return {
            "display_name": spec.display_name,
            "in_domain": spec.in_domain,
            "kind": spec.kind,
            "source": spec.data_file
            or (str(spec.fixture_path) if c.data_source == "fixtures" else spec.source_description()),
            "num_problems": len(items),
            "n": c.n,
            "num_samples": len(records),
            "mean_tokens": sum(tokens) / len(tokens) if tokens else math.nan,
            "truncated_rate": sum(r["finish_reason"] == "length" for r in records) / len(records)
            if records
            else math.nan,
            "scores": scores,
            "per_problem": per_problem,
        }

    @staticmethod
    def _averages(summary: dict[str, Any], scorers: list[str]) -> dict[str, Any]:
        benches = [b for b in summary["benchmarks"].values() if b.get("in_domain", True)]
        out = {}
        for name in scorers:
            metrics = set.intersection(*(set(b["scores"][name]) for b in benches)) if benches else set()
            out[name] = {
                m: sum(b["scores"][name][m] for b in benches) / len(benches)
                for m in sorted(metrics)
                if m.startswith("pass@")
            }
        return out | {"benchmarks": [n for n, b in summary["benchmarks"].items() if b.get("in_domain", True)]}

    # -- meta-awareness ----------------------------------------------------------------------------------------------

    def _run_meta(self, spec: BenchmarkSpec, items: list[Problem], run_dir: Path) -> RecordFile:
        from masa_trl.meta import parse_meta_prediction

        c = self.config
        file = RecordFile(run_dir / "meta_records" / f"{spec.name}.jsonl")

        def prompt_for(problem: Problem) -> list[int]:
            return self._encode(self._meta_messages(problem))

        def make_records(pairs):
            records = []
            for problem, idx, _ids, comp in pairs:
                # The prompt asks for a length up to meta_max_length: above it is unparsable, as in training.
                parsed = parse_meta_prediction(
                    comp.text, pass_rate_scale=c.pass_rate_scale, max_length=c.meta_max_length
                )
                records.append(
                    {
                        "benchmark": spec.name,
                        "problem_id": problem.problem_id,
                        "sample_idx": idx,
                        "completion": comp.text,
                        "num_tokens": comp.num_tokens,
                        "finish_reason": comp.finish_reason,
                        "prediction": None
                        if parsed is None
                        else {"notions": list(parsed.notions), "pass_rate": parsed.pass_rate, "length": parsed.length},
                    }
                )
            return records

        self.generated_meta_samples += self._generate_into(
            file, items, c.meta_n, prompt_for, c.meta_sampling(), make_records, desc=f"{spec.name} (meta)", salt="meta"
        )
        return file

    def _aggregate_meta(self, file: RecordFile, items: list[Problem]) -> dict[str, dict[str, Any]]:
        from types import SimpleNamespace

        from evaluation.meta_eval import aggregate_predictions

        out = {}
        for p in items:
            recs = [file.records[(p.problem_id, i)] for i in range(self.config.meta_n) if (p.problem_id, i) in file]
            parsed = [SimpleNamespace(**r["prediction"]) if r.get("prediction") else None for r in recs]
            out[p.problem_id] = aggregate_predictions(parsed)
        return out

    def _meta_rows(self, meta_file: RecordFile, items: list[Problem], file: RecordFile, scorer: str) -> list[dict]:
        aggregated = self._aggregate_meta(meta_file, items)
        rows = []
        for p in items:
            recs = [file.records[(p.problem_id, i)] for i in range(self.config.n) if (p.problem_id, i) in file]
            correct_lengths = [r["num_tokens"] for r in recs if r["scores"][scorer]["correct"]]
            rows.append(
                {
                    "problem_id": p.problem_id,
                    **aggregated[p.problem_id],
                    "measured_pass_rate": sum(bool(r["scores"][scorer]["correct"]) for r in recs) / len(recs)
                    if recs
                    else None,
                    "measured_length": sum(r["num_tokens"] for r in recs) / len(recs) if recs else None,
                    "correct_length_min": min(correct_lengths) if correct_lengths else None,
                    "correct_length_max": max(correct_lengths) if correct_lengths else None,
                }
            )
        return rows

    def _meta_summary(self, meta_rows: dict[str, list[dict]], run_dir: Path, scorer: str) -> dict[str, Any]:
        from evaluation.meta_eval import meta_awareness_metrics, plot_meta

        c = self.config
        out: dict[str, Any] = {"meta_n": c.meta_n, "scorer": scorer, "benchmarks": {}}
        all_rows = []
        for name, rows in meta_rows.items():
            metrics = meta_awareness_metrics(rows, c.pass_rate_scale)
            if c.plot:
                metrics["plot"] = self._plot(plot_meta, rows, run_dir / f"meta_{name}.png", name)
            metrics["per_problem"] = rows
            out["benchmarks"][name] = metrics
            all_rows += rows
        if len(meta_rows) > 1:
            metrics = meta_awareness_metrics(all_rows, c.pass_rate_scale)
            if c.plot:
                metrics["plot"] = self._plot(plot_meta, all_rows, run_dir / "meta_all.png", "all benchmarks")
            out["benchmarks"]["all"] = metrics
        return out

    def _plot(self, plot_meta, rows, path: Path, title: str) -> str | None:
        try:
            plot_meta(rows, path, title=title, pass_rate_scale=self.config.pass_rate_scale)
        except ImportError:
            logger.warning("matplotlib is not installed (pip install 'masa-trl[plot]'): no meta-awareness plot")
            return None
        return path.name


def _has_records(run_dir: Path) -> bool:
    """Whether the run folder holds any generated sample (solution or meta)."""
    return any(
        file.stat().st_size > 0 for sub in ("records", "meta_records") for file in (run_dir / sub).glob("*.jsonl")
    )


def _remove_if_unused(run_dir: Path) -> None:
    """Remove what a run wrote before its first record (config.json, empty record folders) and the folder if empty."""
    try:
        if not run_dir.is_dir() or _has_records(run_dir):
            return
        for sub in ("records", "meta_records"):
            for file in (run_dir / sub).glob("*.jsonl"):
                file.unlink()
            if (run_dir / sub).is_dir() and not any((run_dir / sub).iterdir()):
                (run_dir / sub).rmdir()
        (run_dir / "config.json").unlink(missing_ok=True)
        if not any(run_dir.iterdir()):
            run_dir.rmdir()
            logger.info("removed %s: the run failed before its first record", run_dir)
    except OSError as err:  # the run's own error matters more than a failed clean-up
        logger.warning("could not clean up %s: %s", run_dir, err)


def _add_notion_hint(messages: list[dict[str, str]], notions: list[str]) -> list[dict[str, str]]:
    """Append the predicted notions to the last user message (appendix B's meta feed-in)."""
    from masa_trl.templates import add_notion_hint

    return add_notion_hint(messages, notions)


def run_evaluation(config: EvalConfig, backend: Backend | None = None, tokenizer=None) -> dict[str, Any]:
    """Run an evaluation and return its summary (also written to `<output_dir>/<run_name>/summary.json`)."""
    return Evaluator(config, backend=backend, tokenizer=tokenizer).run()


__all__ = ["Completion", "EvalConfig", "Evaluator", "RecordFile", "ResumeMismatchError", "run_evaluation"]
