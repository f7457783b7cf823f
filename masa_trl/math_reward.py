r"""Answer-correctness reward: the last `\boxed{}` answer checked against the gold answer with math-verify.

[`math_accuracy_reward`] is a TRL reward callable: 1.0 for a correct answer, 0.0 for a wrong or missing one, and
`None` when the gold answer itself cannot be parsed (TRL then leaves the row out of the group baseline).

It is built so that it can neither hang nor crash a training run:

- a fast path settles most answers in process, and only where its verdict is the one math-verify would give
  ([`masa_trl.answer_verdicts.quick_verdict`]: plain integers, simple fractions and short decimals, answers
  identical up to spacing, and numbers, surds, multiples of pi and polynomials by exact arithmetic on a small LaTeX
  subset);
- everything else runs in a small pool of worker processes owned by a [`MathVerifier`]. Each worker calls
  math-verify in its main thread, so math-verify's own signal-based timeouts work, and the parent enforces a hard
  wall-clock deadline per item on top: a worker that does not answer in time is killed and replaced, its item
  scores 0.0, and the rest of the batch carries on with the other workers;
- verdicts are cached by (gold, extracted answer), and timeouts and parse failures are counted ([`MathVerifier.stats`])
  and, inside a trainer, logged through TRL's `log_metric` as `math_reward/*`.

Workers are forked by default: they start in milliseconds and import nothing (measured: 0.01 s for two workers and
for a replacement, against about 0.45 s per worker with "spawn" or "forkserver", which also re-import the main
script). They only run math-verify, never torch, so forking a trainer that has torch threads is safe in practice.
In the workers, latex2sympy parses with ANTLR's two-stage (SLL, then LL) strategy, which gives the same results and
is several times faster on tuples and intervals (see [`_enable_two_stage_parsing`]).

>>> from masa_trl.math_reward import math_accuracy_reward
>>> completions = [[{"role": "assistant", "content": r"So the answer is \boxed{\frac{1}{2}}."}], "I think \\boxed{3}"]
>>> math_accuracy_reward(completions, answer=["0.5", "4"])  # doctest: +SKIP
[1.0, 0.0]
"""

from __future__ import annotations

import hashlib
import logging
import math
import multiprocessing
import os
import re
import signal
import threading
import time
import weakref
from collections import Counter, OrderedDict, deque
from multiprocessing.connection import wait
from typing import Self

from masa_trl.answer_verdicts import quick_verdict


logger = logging.getLogger(__name__)

# Result codes sent back by the workers, alongside the score.
_OK, _GOLD_UNPARSABLE, _PRED_UNPARSABLE, _TIMEOUT, _ERROR = range(5)
_CODE_NAMES = {_GOLD_UNPARSABLE: "gold_unparsable", _PRED_UNPARSABLE: "pred_unparsable"}

# ---------------------------------------------------------------------------------------------------------------------
# Answer extraction
# ---------------------------------------------------------------------------------------------------------------------

_BRACE_OR_ESCAPE = re.compile(r"\\.|[{}]", re.DOTALL)
_BARE_ARGUMENT = re.compile(r"\s+([^\s$]+)")


def extract_boxed_answer(text: str | None) -> str | None:
    r"""The content of the last `\boxed{...}` or `\fbox{...}` in `text`, or `None` when there is none.

    Nested braces are matched (escaped braces such as `\{` do not count) in time linear in the length of the text.
    The argument-less form `\boxed 5` is also read. A last box that is never closed (a truncated completion) or that
    is empty gives `None`.

    >>> extract_boxed_answer(r"first \boxed{1}, then \boxed{\frac{1}{2}}.")
    '\\frac{1}{2}'
    >>> extract_boxed_answer("no answer") is None
    True
    """
    if not text:
        return None
    start = -1
    for keyword in ("\\boxed", "\\fbox"):
        position = text.rfind(keyword)
        if position > start:
            start, end = position, position + len(keyword)
    if start < 0:
        return None
    if text.startswith("{", end):
        depth = 0
        for match in _BRACE_OR_ESCAPE.finditer(text, end):
            token = match.group()
            if token == "{":
                depth += 1
            elif token == "}":
                depth -= 1
                if depth == 0:
                    return text[end + 1 : match.start()].strip() or None
        return None
    bare = _BARE_ARGUMENT.match(text, end)
    return bare.group(1) if bare else None


def completion_text(completion) -> str:
    """The text of a completion: a plain string, or the last message of a conversational completion."""
    if isinstance(completion, str):
        return completion
    if not completion:
        return ""
    content = completion[-1]["content"]
    if isinstance(content, str):
        return content
    # Multimodal content: a list of typed parts.
    return "".join(part.get("text", "") for part in content if isinstance(part, dict))


# ---------------------------------------------------------------------------------------------------------------------
# Worker process: math-verify only
# ---------------------------------------------------------------------------------------------------------------------


def _prepare_gold(gold) -> str | None:
    r"""The gold answer as a bare string; a `\boxed{}` inside it is unwrapped."""
    if gold is None:
        return None
    gold = str(gold).strip()
    if "\\boxed" in gold or "\\fbox" in gold:
        gold = extract_boxed_answer(gold) or gold
    return gold or None


class _MathVerifyRunner:
    """Calls math-verify for one (gold, prediction) pair at a time; lives in a worker process."""

    def __init__(self, signal_timeout: int):
        from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify
        from math_verify.errors import TimeoutException

        self.parse, self.verify, self.timeout_exception = parse, verify, TimeoutException
        self.signal_timeout = signal_timeout
        # Predictions are boxed answers: LaTeX only, read from the box, with math-verify's default normalisation
        # (units dropped, shorthand such as `\frac12` fixed). Bare golds are boxed the same way, so both sides go
        # through the same normalisation.
        self.boxed_config = [LatexExtractionConfig(boxed_match_priority=0, try_extract_without_anchor=False)]
        self.text_config = [LatexExtractionConfig(), ExprExtractionConfig()]
        self.gold_cache: dict[str, list] = {}
        self.timed_out = False

        runner = self

        class _TimeoutFlag(logging.Filter):
            """Turns math-verify's "Timeout during ..." warnings into a flag, and drops all its log records."""

            def filter(self, record):
                if str(record.msg).startswith("Timeout"):
                    runner.timed_out = True
                return False

        for name in ("math_verify.parser", "math_verify.grader"):
            logging.getLogger(name).setLevel(logging.WARNING)  # the filter only sees records that are created
            logging.getLogger(name).addFilter(_TimeoutFlag())
        logging.getLogger("latex2sympy2_extended").setLevel(logging.CRITICAL)

    def _parse(self, text: str, config) -> list:
        # math-verify returns [] on errors and logs (then flags, see above) its timeouts.
        return self.parse(text, extraction_config=config, parsing_timeout=self.signal_timeout)

    def __call__(self, gold: str, prediction: str | None) -> tuple[float | None, int]:
        self.timed_out = False
        try:
            gold_parsed = self.gold_cache.get(gold)
            if gold_parsed is None:
                if "$" in gold or "\\(" in gold or "\\[" in gold:
                    gold_parsed = self._parse(gold, self.text_config)
                else:
                    gold_parsed = self._parse(f"$\\boxed{{{gold}}}$", self.boxed_config)
                if self.timed_out:
                    return 0.0, _TIMEOUT
                if len(self.gold_cache) >= 4096:
                    self.gold_cache.clear()
                self.gold_cache[gold] = gold_parsed
            if not gold_parsed:
                return None, _GOLD_UNPARSABLE
            if prediction is None:
                return 0.0, _OK
            pred_parsed = self._parse(f"$\\boxed{{{prediction}}}$", self.boxed_config)
            if not pred_parsed:
                return 0.0, _TIMEOUT if self.timed_out else _PRED_UNPARSABLE
            correct = self.verify(gold_parsed, pred_parsed, timeout_seconds=self.signal_timeout)
            if self.timed_out:
                return 0.0, _TIMEOUT
            return (1.0 if correct else 0.0), _OK
        except self.timeout_exception:  # derives from BaseException; an alarm that fired outside math-verify's guards
            return 0.0, _TIMEOUT
        except Exception:  # noqa: BLE001  (sympy can raise anything; the worker must survive and answer)
            return 0.0, _ERROR


def _enable_two_stage_parsing() -> bool:
    """Make latex2sympy's ANTLR parser try the fast SLL prediction mode first, and re-parse in its usual LL mode only
    when that fails (the two-stage strategy of the ANTLR documentation). ANTLR guarantees that an SLL parse that
    succeeds gives the tree LL would give, and latex2sympy raises on any syntax error, so results are unchanged;
    tuples and intervals parse about 20 times faster. Applied in worker processes only; a no-op (False) if the
    internals it relies on are not there."""
    try:
        from antlr4.atn.PredictionMode import PredictionMode
        from latex2sympy2_extended.latex2sympy2 import _Latex2Sympy

        full_parse, create_parser = _Latex2Sympy.parse, _Latex2Sympy.create_parser
    except (ImportError, AttributeError):
        return False
    if getattr(full_parse, "two_stage", False):
        return True

    def create_sll_parser(self, latex_str):
        parser = create_parser(self, latex_str)
        if getattr(self, "_sll_stage", False):
            parser._interp.predictionMode = PredictionMode.SLL
        return parser

    def two_stage_parse(self, latex_str):
        if getattr(self, "_sll_stage", False):  # a nested parse within the SLL stage
            return full_parse(self, latex_str)
        self._sll_stage = True
        try:
            return full_parse(self, latex_str)
        except Exception:  # noqa: BLE001  (a syntax error or a conversion failure: redo it all the usual way)
            self._sll_stage = False
            return full_parse(self, latex_str)
        finally:
            self._sll_stage = False

    two_stage_parse.two_stage = True
    _Latex2Sympy.create_parser, _Latex2Sympy.parse = create_sll_parser, two_stage_parse
    return True


def _limit_memory(max_memory_mb: int | None) -> None:
    """Cap the worker's address space at its current size plus `max_memory_mb` (Linux), so that a runaway sympy
    computation raises MemoryError instead of calling the OOM killer onto the trainer."""
    if not max_memory_mb:
        return
    try:
        import resource

        with open("/proc/self/statm") as f:
            current = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        limit = current + max_memory_mb * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    except (OSError, ValueError, ImportError):
        pass


def _worker_main(
    conn, signal_timeout: int, max_memory_mb: int | None, two_stage_parsing: bool, inherited_fds: list[int]
) -> None:
    """Worker loop: receive lists of (item id, gold, prediction), answer (item id, (score, code)) per item."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's business
    # After a fork, release the parent's ends of all workers' pipes (this one's included), so that each worker sees
    # EOF when the parent dies. They are pointed at /dev/null rather than closed, so that their numbers are not reused.
    if inherited_fds:
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in inherited_fds:
            os.dup2(devnull, fd)
        os.close(devnull)
    _limit_memory(max_memory_mb)
    runner = _MathVerifyRunner(signal_timeout)
    if two_stage_parsing:
        _enable_two_stage_parsing()
    conn.send("ready")
    while True:
        try:
            chunk = conn.recv()
        except (EOFError, OSError):
            return
        if chunk is None:
            return
        for item_id, gold, prediction in chunk:
            conn.send((item_id, runner(gold, prediction)))


# ---------------------------------------------------------------------------------------------------------------------
# Parent side: worker pool with per-item deadlines, cache, counters
# ---------------------------------------------------------------------------------------------------------------------

_PARENT_FDS: set[int] = set()  # parent ends of all workers' pipes, closed in forked children


class _WorkerStartError(RuntimeError):
    pass


class _Worker:
    def __init__(self, context, signal_timeout: int, max_memory_mb: int | None, two_stage_parsing: bool):
        self.conn, child_conn = context.Pipe()
        inherited = sorted(_PARENT_FDS | {self.conn.fileno()}) if context.get_start_method() == "fork" else []
        self.process = context.Process(
            target=_worker_main,
            args=(child_conn, signal_timeout, max_memory_mb, two_stage_parsing, inherited),
            name="math-verify-worker",
            daemon=True,
        )
        self.process.start()
        child_conn.close()
        self.owner_pid = os.getpid()  # a process forked from the owner must not stop the owner's workers
        self.fd = self.conn.fileno()
        _PARENT_FDS.add(self.fd)
        self.ready = False
        self.started = time.monotonic()
        self.outstanding: deque = deque()  # items sent and not answered, in order
        self.outstanding_chars = 0
        self.head_started = 0.0  # when the worker started on the first outstanding item

    def kill(self) -> None:
        if os.getpid() != self.owner_pid:
            return
        _PARENT_FDS.discard(self.fd)
        if self.process.is_alive():
            self.process.kill()
        self.process.join(timeout=5)
        self.conn.close()

    def stop(self) -> None:
        if os.getpid() != self.owner_pid:
            return
        try:
            self.conn.send(None)
        except OSError:
            pass
        self.process.join(timeout=1)
        self.kill()


class MathVerifier:
    r"""Scores (gold, predicted answer) pairs with math-verify, in a pool of worker processes that cannot hang.

    Args:
        num_workers (`int`, *optional*):
            Worker processes; defaults to `min(2, os.cpu_count())`.
        timeout (`float`, *optional*, defaults to `5.0`):
            Hard wall-clock limit in seconds for one pair. A worker that exceeds it is killed and replaced, and the
            pair scores 0.0. Inside the worker, math-verify's own timeouts are set to about half of it, so that most
            slow pairs give up there and the worker survives.
        cache_size (`int`, *optional*, defaults to `100_000`):
            Verdicts kept in the LRU cache keyed by (gold, prediction); 0 disables the cache.
        fast_path (`bool`, *optional*, defaults to `True`):
            Settle what [`quick_verdict`] can (numbers, surds, multiples of pi, polynomials, identical answers) in
            process, without math-verify.
        chunk_size (`int`, *optional*, defaults to `16`):
            Pairs per message to a worker.
        start_method (`str`, *optional*):
            multiprocessing start method for the workers; defaults to `"fork"` where available (a worker then starts
            in milliseconds and imports nothing), else `"spawn"`. `"forkserver"` and `"spawn"` also work, at about
            a second per (re)start.
        max_memory_mb (`int`, *optional*, defaults to `4096`):
            Extra address space a worker may allocate (Linux), so that a runaway computation fails inside the
            worker; `None` for no limit.
        two_stage_parsing (`bool`, *optional*, defaults to `True`):
            In the workers, let latex2sympy's ANTLR parser try its fast SLL mode before the full LL mode; same
            results, several times faster on tuples, intervals and other ambiguous-looking LaTeX.

    `verify_batch(golds, predictions)` takes bare gold answers and extracted predictions (`None` for a completion
    without an answer) and returns 1.0 / 0.0, or `None` where the gold answer cannot be parsed. The verifier is a
    context manager; [`close`] stops the workers, which also happens at interpreter exit.
    """

    def __init__(
        self,
        num_workers: int | None = None,
        timeout: float = 5.0,
        cache_size: int = 100_000,
        fast_path: bool = True,
        chunk_size: int = 16,
        start_method: str | None = None,
        max_memory_mb: int | None = 4096,
        two_stage_parsing: bool = True,
    ):
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, got {timeout}.")
        self.num_workers = num_workers or min(2, os.cpu_count() or 1)
        self.timeout = float(timeout)
        self.signal_timeout = max(1, int(self.timeout / 2))  # math-verify's alarms take whole seconds
        self.cache_size = cache_size
        self.fast_path = fast_path
        self.chunk_size = max(1, chunk_size)
        if start_method is None:
            start_method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        self.context = multiprocessing.get_context(start_method)
        self.max_memory_mb = max_memory_mb
        self.two_stage_parsing = two_stage_parsing
        self._cache: OrderedDict = OrderedDict()
        self._workers: list[_Worker] = []
        self._lock = threading.Lock()
        self._stats: Counter = Counter()
        self._pool_events: Counter = Counter()  # kills and restarts during a batch, folded into its counters
        # Stops the workers when the verifier is garbage-collected, and at interpreter exit.
        self._finalizer = weakref.finalize(self, _stop_workers, self._workers)

    # -- public API ---------------------------------------------------------------------------------------------------

    def verify_batch(self, golds: list[str], predictions: list[str | None]) -> list[float | None]:
        """1.0 / 0.0 per pair, `None` where the gold answer cannot be parsed; a `None` prediction scores 0.0."""
        return self._verify_batch(golds, predictions)[0]

    def stats(self) -> dict[str, int]:
        """Cumulative counters: `items`, `fast_path`, `cache_hits`, `verified` (pairs sent to math-verify),
        `timeouts` (math-verify's own plus `hard_timeouts`, the pairs whose worker was killed), `gold_unparsable`,
        `pred_unparsable`, `errors` and `worker_restarts`."""
        keys = ["items", "fast_path", "cache_hits", "verified", "timeouts", "hard_timeouts", "gold_unparsable"]
        keys += ["pred_unparsable", "errors", "worker_restarts"]
        return {key: self._stats[key] for key in keys}

    def clear_cache(self) -> None:
        self._cache.clear()

    def start(self) -> None:
        """Start the workers now rather than on the first batch that needs them, and wait until they are ready."""
        with self._lock:
            self._ensure_workers()
            self._wait_ready()

    def close(self) -> None:
        """Stop the workers. The verifier restarts them if it is used again."""
        with self._lock:
            _stop_workers(self._workers)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- batch logic --------------------------------------------------------------------------------------------------

    def _verify_batch(self, golds, predictions) -> tuple[list[float | None], Counter]:
        """Scores plus this call's counters."""
        if len(golds) != len(predictions):
            raise ValueError(f"Got {len(golds)} gold answers for {len(predictions)} predictions.")
        with self._lock:
            counts: Counter = Counter(items=len(golds))
            scores: list[float | None] = [None] * len(golds)
            todo: dict[tuple, list[int]] = {}  # cache key -> batch positions, first one sent to a worker
            jobs: list[tuple[tuple, str, str | None]] = []
            for index, (raw_gold, prediction) in enumerate(zip(golds, predictions, strict=True)):
                gold = _prepare_gold(raw_gold)
                if gold is None:
                    counts["gold_unparsable"] += 1
                    continue
                if prediction is not None:
                    prediction = prediction.strip() or None
                key = (_key_part(gold), _key_part(prediction))
                if key in todo:
                    todo[key].append(index)
                    continue
                if key in self._cache:
                    self._cache.move_to_end(key)
                    scores[index] = self._cache[key]
                    counts["cache_hits"] += 1
                    counts["gold_unparsable"] += scores[index] is None
                    continue
                verdict = quick_verdict(gold, prediction) if self.fast_path else None
                if verdict is not None:
                    scores[index] = verdict
                    counts["fast_path"] += 1
                    self._remember(key, verdict)
                    continue
                todo[key] = [index]
                jobs.append((key, gold, prediction))

            if jobs:
                counts["verified"] += len(jobs)
                for key, (score, code) in self._run_jobs(jobs).items():
                    if code == _GOLD_UNPARSABLE or code == _PRED_UNPARSABLE:
                        counts[_CODE_NAMES[code]] += len(todo[key])
                    elif code == _TIMEOUT or code == _ERROR:
                        counts["timeouts" if code == _TIMEOUT else "errors"] += 1  # events, not positions
                    for index in todo[key]:
                        scores[index] = score
                    self._remember(key, score)
                counts["cache_hits"] += sum(len(indices) - 1 for indices in todo.values())

            counts.update(self._pool_events)
            self._pool_events.clear()
            self._stats.update(counts)
            if counts["timeouts"] or counts["errors"]:
                logger.warning(
                    "math-verify timed out on %d and failed on %d of %d answers; they score 0.",
                    counts["timeouts"],
                    counts["errors"],
                    len(golds),
                )
            if counts["gold_unparsable"] or counts["pred_unparsable"]:
                logger.debug(
                    "Unparsable: %d gold answers, %d predictions.",
                    counts["gold_unparsable"],
                    counts["pred_unparsable"],
                )
            return scores, counts

    def _remember(self, key, score) -> None:
        if self.cache_size <= 0:
            return
        self._cache[key] = score
        if len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    # -- worker pool --------------------------------------------------------------------------------------------------

    def _ensure_workers(self) -> None:
        # Workers inherited through a fork of the owning process belong to the owner: start our own.
        self._workers[:] = [w for w in self._workers if w.owner_pid == os.getpid() and w.process.is_alive()]
        if self.context.get_start_method() == "fork":
            import math_verify  # noqa: F401  (imported once here, so that forked workers start with it loaded)

        while len(self._workers) < self.num_workers:
            self._workers.append(
                _Worker(self.context, self.signal_timeout, self.max_memory_mb, self.two_stage_parsing)
            )

    def _replace(self, worker: _Worker) -> None:
        worker.kill()
        self._workers.remove(worker)
        self._workers.append(_Worker(self.context, self.signal_timeout, self.max_memory_mb, self.two_stage_parsing))
        self._pool_events["worker_restarts"] += 1

    def _wait_ready(self, limit: float = 120.0) -> None:
        deadline = time.monotonic() + limit
        while not all(worker.ready for worker in self._workers):
            waiting = [worker for worker in self._workers if not worker.ready]
            ready = wait([worker.conn for worker in waiting], timeout=max(0.0, deadline - time.monotonic()))
            if not ready:
                raise _WorkerStartError(f"math-verify workers did not start within {limit:.0f} s.")
            for worker in waiting:
                if worker.conn in ready:
                    self._read_ready(worker)

    def _read_ready(self, worker: _Worker) -> None:
        try:
            message = worker.conn.recv()
        except (EOFError, OSError):
            message = None
        if message != "ready":
            worker.process.join(timeout=1)
            raise _WorkerStartError(
                f"A math-verify worker exited during start-up (exit code {worker.process.exitcode}); its traceback is "
                "above. With the 'spawn' or 'forkserver' start method, the main script must guard its entry point "
                "with `if __name__ == '__main__':`."
            )
        worker.ready = True

    def _send(self, worker: _Worker, queue: deque, pending_total: int) -> None:
        """Send `worker` its next chunk. A chunk goes to a busy worker only while the pipe buffer can take it without
        blocking (a hung worker does not read), so the parent never blocks on a send."""
        share = math.ceil(pending_total / self.num_workers)
        size = min(self.chunk_size, max(1, share)) - len(worker.outstanding)
        chunk, chars = [], 0
        while queue and len(chunk) < size:
            job = queue[0]
            job_chars = len(job[1]) + len(job[2] or "")
            if (worker.outstanding or chunk) and worker.outstanding_chars + chars + job_chars > 8192:
                break
            chunk.append(queue.popleft())
            chars += job_chars
        if not chunk:
            return
        try:
            worker.conn.send([(id(job), job[1], job[2]) for job in chunk])
        except OSError:  # the worker died; its chunk goes back to the queue
            queue.extendleft(reversed(chunk))
            raise
        if not worker.outstanding:
            worker.head_started = time.monotonic()
        worker.outstanding.extend(chunk)
        worker.outstanding_chars += chars

    def _run_jobs(self, jobs: list) -> dict:
        """(score, code) per job key, computed by the workers; each job gets at most `timeout` seconds of a worker."""
        self._ensure_workers()
        self._wait_ready()
        queue = deque(jobs)
        results: dict = {}
        while queue or any(worker.outstanding for worker in self._workers):
            for worker in list(self._workers):
                if not worker.ready or len(worker.outstanding) > self.chunk_size // 2 or not queue:
                    continue
                try:
                    self._send(worker, queue, len(queue) + sum(len(w.outstanding) for w in self._workers))
                except OSError:
                    self._crashed(worker, queue, results)
            busy = [worker for worker in self._workers if worker.outstanding or not worker.ready]
            now = time.monotonic()
            deadlines = [worker.head_started + self.timeout for worker in busy if worker.outstanding]
            deadlines += [worker.started + 120.0 for worker in busy if not worker.ready]
            ready = wait([worker.conn for worker in busy], timeout=max(0.0, min(deadlines) - now)) if busy else []
            for worker in busy:
                if worker.conn not in ready:
                    continue
                if not worker.ready:
                    self._read_ready(worker)
                    continue
                try:
                    while worker.conn.poll():
                        item_id, result = worker.conn.recv()
                        job = worker.outstanding.popleft()
                        assert item_id == id(job), "math-verify worker answered out of order"
                        worker.outstanding_chars -= len(job[1]) + len(job[2] or "")
                        worker.head_started = time.monotonic()
                        results[job[0]] = result
                except (EOFError, OSError):
                    self._crashed(worker, queue, results)
            now = time.monotonic()
            for worker in list(self._workers):
                if worker.outstanding and now >= worker.head_started + self.timeout:
                    self._hung(worker, queue, results)
                elif not worker.ready and now >= worker.started + 120.0:
                    raise _WorkerStartError("A math-verify worker did not start within 120 s.")
        return results

    def _give_up_on_head(self, worker: _Worker, queue: deque, results: dict, code: int) -> tuple:
        job = worker.outstanding.popleft()
        results[job[0]] = (0.0, code)
        queue.extendleft(reversed(worker.outstanding))  # the rest of its chunk goes to the front of the queue
        worker.outstanding.clear()
        self._replace(worker)
        return job

    def _hung(self, worker: _Worker, queue: deque, results: dict) -> None:
        job = self._give_up_on_head(worker, queue, results, _TIMEOUT)
        self._pool_events["hard_timeouts"] += 1
        logger.warning(
            "math-verify took more than %.1f s on gold %.80r vs prediction %.200r; its worker was killed, the "
            "prediction scores 0.",
            self.timeout,
            job[1],
            job[2],
        )

    def _crashed(self, worker: _Worker, queue: deque, results: dict) -> None:
        if not worker.outstanding:
            self._replace(worker)
            return
        job = self._give_up_on_head(worker, queue, results, _ERROR)
        logger.warning(
            "A math-verify worker died (exit code %s) on gold %.80r vs prediction %.200r; the prediction scores 0.",
            worker.process.exitcode,
            job[1],
            job[2],
        )


def _key_part(text: str | None):
    """Cache key part; long strings (pathological answers) are stored as a digest."""
    if text is None or len(text) <= 256:
        return text
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


def _stop_workers(workers: list[_Worker]) -> None:
    for worker in workers:
        worker.stop()
    workers.clear()


# ---------------------------------------------------------------------------------------------------------------------
# Module-level helpers and the TRL reward
# ---------------------------------------------------------------------------------------------------------------------

_default_verifier: MathVerifier | None = None
_default_lock = threading.Lock()


def get_default_verifier() -> MathVerifier:
    """The process-wide [`MathVerifier`] used by [`math_accuracy_reward`] and [`verify_answers`], created on first use."""
    global _default_verifier
    with _default_lock:
        if _default_verifier is None:
            _default_verifier = MathVerifier()
        return _default_verifier


def verify_answers(golds: list[str], completions: list) -> list[float | None]:
    r"""1.0 / 0.0 per completion (string or conversational), `None` where the gold answer cannot be parsed.

    The answer is the last `\boxed{}` of each completion; completions without one score 0.0.
    """
    predictions = [extract_boxed_answer(completion_text(completion)) for completion in completions]
    return get_default_verifier().verify_batch(list(golds), predictions)


def math_accuracy_reward(completions: list, answer: list[str], log_metric=None, **kwargs) -> list[float | None]:
    r"""TRL reward: 1.0 when the last `\boxed{}` answer of a completion equals the `answer` column per math-verify.

    A completion without a boxed answer scores 0.0; a row whose gold answer cannot be parsed gets `None`, which TRL
    leaves out of the group baseline. Inside a trainer, `log_metric` receives, per call, `math_reward/timeouts` and
    `math_reward/gold_unparsable` (counts) and `math_reward/no_boxed` (share of completions without a boxed answer).
    Other keyword arguments (`prompts`, `completion_ids`, `trainer_state`, other dataset columns) are ignored.

    >>> math_accuracy_reward([r"\boxed{\frac{1}{2}}", "no answer"], answer=["0.5", "0.5"])  # doctest: +SKIP
    [1.0, 0.0]
    """
    predictions = [extract_boxed_answer(completion_text(completion)) for completion in completions]
    scores, counts = get_default_verifier()._verify_batch(list(answer), predictions)
    if log_metric is not None:
        no_boxed = sum(prediction is None for prediction in predictions)
        log_metric("math_reward/timeouts", float(counts["timeouts"]))
        log_metric("math_reward/gold_unparsable", float(counts["gold_unparsable"]))
        log_metric("math_reward/no_boxed", no_boxed / max(1, len(predictions)))
    return scores
