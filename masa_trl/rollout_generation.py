"""One generation call per phase for MASA's rollouts, on each of TRL's generation backends.

A MASA step needs two kinds of rollout from different prompts and group sizes (G solutions, M meta rollouts per
prompt), and MASA-efficient adds per-row token caps and rows that are not generated at all. TRL's
`_generate_single_turn` makes one engine call with one set of sampling parameters and one group size. The generators
here make that one call hold every row of a phase (both kinds of row, when neither waits for the other) without
copying TRL's generation code: they call TRL's method and, for the duration of the call, stand between it and the
backend object it uses:

* transformers (`generate`): a stopping criterion stops each row at its own cap within the one padded call; the
  skipped rows are left out of the call;
* transformers continuous batching (`generate_batch`): each request gets its own `max_new_tokens`, so a capped row
  leaves the batch at its cap;
* vLLM colocate (`vllm_generation.llm`): one `SamplingParams` per request, each with its own `max_tokens`, on an
  engine built with a seat for every row of a call (`colocated_engine_seats`);
* vLLM server (`vllm_generation.vllm_client`, main process): the rows are regrouped into one request per group size
  and cap, all in flight at once, each prompt sent once with its own `n`; a failed or slow request ends the step
  with an error naming the server and the timeout on every process, instead of leaving the others waiting.

Every process makes the same calls whatever its rows are (FSDP and ZeRO-3 gather weights inside them), so a process
with nothing to generate still generates one throw-away token.
"""

import functools
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import torch
from accelerate.utils import broadcast_object_list, gather_object
from transformers.utils import logging

from masa_trl.layout import RolloutLayout


logger = logging.get_logger(__name__)


SOLUTION, META = "solution", "meta"


@contextmanager
def swapped(obj, name: str, value):
    """`obj.<name>` is `value` for the duration, then what it was: an attribute the instance did not hold itself (a
    method of its class) is deleted again, not left as an instance attribute. Every generator stands between TRL and a
    backend object this way, for one call only."""
    had_own = name in vars(obj)
    original = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        if had_own:
            setattr(obj, name, original)
        else:
            delattr(obj, name)


@dataclass(frozen=True)
class RowRequest:
    """One rollout to generate.

    Attributes:
        prompt_ids: the tokenised prompt.
        kind: `"solution"` or `"meta"`.
        prompt_index: the prompt's index in the gathered batch; rows with the same kind and index are samples of one
            prompt (the server sends that prompt once, with `n` = their number).
        cap: the row's token cap (MASA-efficient's early cutoff), `None` for `max_completion_length`.
        skip: not generated at all (a gated prompt): the row gets a one-token placeholder.
    """

    prompt_ids: list[int]
    kind: str
    prompt_index: int
    cap: int | None = None
    skip: bool = False


@dataclass
class Generated:
    """What one phase's generation produced, in row order, as TRL's `_generate_single_turn` returns it."""

    prompt_ids: list[list[int]]
    completion_ids: list[list[int]]
    logprobs: list[list[float]] | None

    def select(self, rows: list[int]) -> "Generated":
        logprobs = None if self.logprobs is None else [self.logprobs[i] for i in rows]
        return Generated([self.prompt_ids[i] for i in rows], [self.completion_ids[i] for i in rows], logprobs)


# `trl_generate(prompt_ids, num_generations)`: `GRPOTrainer._generate_single_turn` without images.
TRLGenerate = Callable[[list[list[int]], int], tuple[list[list[int]], list[list[float]] | None]]


class RolloutGenerator:
    """Generates a list of `RowRequest`s in one call of TRL's generation: the transformers backend.

    Args:
        trl_generate: TRL's `_generate_single_turn(prompt_ids, None, {}, num_generations)` of the trainer.
        eos_token_id: the token of a skipped row's placeholder.
        unwrapped_model: returns the model TRL generates with (`accelerator.unwrap_model(model_wrapped)`).
        continuous_batching: TRL generates with `generate_batch` (`use_transformers_continuous_batching`) instead of
            a padded `generate`; the caps then go to its requests (`request_caps`) instead of a stopping criterion.
    """

    def __init__(
        self,
        trl_generate: TRLGenerate,
        eos_token_id: int,
        unwrapped_model: Callable | None = None,
        continuous_batching: bool = False,
    ):
        self.trl_generate = trl_generate
        self.eos_token_id = eos_token_id
        self.unwrapped_model = unwrapped_model
        self.continuous_batching = continuous_batching

    def generate(self, rows: list[RowRequest]) -> Generated:
        """Generate every row that is not skipped in one call; each row stops at (and is cut to) its cap."""
        wanted = [i for i, row in enumerate(rows) if not row.skip]
        if wanted:
            requests, caps = [rows[i] for i in wanted], [rows[i].cap for i in wanted]
        else:  # nothing to generate here, but the call is collective: one throw-away token
            requests, caps = [rows[0]], [1]
        completion_ids, logprobs = self._generate(requests, caps)
        out_ids = [[self.eos_token_id] for _ in rows]
        out_logps = None if logprobs is None else [[0.0] for _ in rows]
        for j, i in enumerate(wanted):
            cap = caps[j]
            # Stopping a row at its cap is the same distribution as generating it further and cutting it there.
            out_ids[i] = completion_ids[j][:cap] if cap is not None else completion_ids[j]
            if out_logps is not None:
                out_logps[i] = logprobs[j][:cap] if cap is not None else logprobs[j]
        return Generated([row.prompt_ids for row in rows], out_ids, out_logps)

    def _generate(self, rows: list[RowRequest], caps: list[int | None]):
        prompt_ids = [row.prompt_ids for row in rows]
        limited = any(cap is not None for cap in caps) and self.unwrapped_model is not None
        limit = request_caps if self.continuous_batching else row_caps
        with limit(self.unwrapped_model(), caps) if limited else nullcontext():
            return self.trl_generate(prompt_ids, 1)


class ColocateGenerator(RolloutGenerator):
    """vLLM colocate: the rows go to the process's engine in one `LLM.generate`, one `SamplingParams` per row."""

    def __init__(self, trl_generate: TRLGenerate, eos_token_id: int, vllm_generation):
        super().__init__(trl_generate, eos_token_id)
        self.vllm_generation = vllm_generation

    def _generate(self, rows, caps):
        with per_request_caps(self.vllm_generation, caps) if any(c is not None for c in caps) else nullcontext():
            return self.trl_generate([row.prompt_ids for row in rows], 1)


class ServerGenerator(RolloutGenerator):
    """vLLM server: every process hands TRL all its rows (TRL slices the server's answer by equal row counts); the
    main process's client is wrapped in a `GroupedClient` that sends one request per group size and cap."""

    def __init__(self, trl_generate: TRLGenerate, eos_token_id: int, vllm_generation, accelerator, timeout: float):
        super().__init__(trl_generate, eos_token_id)
        self.vllm_generation, self.accelerator, self.timeout = vllm_generation, accelerator, timeout

    def generate(self, rows: list[RowRequest]) -> Generated:
        specs = gather_object([(row.kind, row.prompt_index, row.cap, row.skip) for row in rows])
        failure = [None]
        with self._grouped_client(specs, failure):
            completion_ids, logprobs = self.trl_generate([row.prompt_ids for row in rows], 1)
        # The main process answered every process (placeholders if it failed); now all of them learn whether it did.
        broadcast_object_list(failure, from_process=0)
        if failure[0] is not None:
            raise RuntimeError(failure[0])
        return Generated([row.prompt_ids for row in rows], completion_ids, logprobs)

    @contextmanager
    def _grouped_client(self, specs, failure: list):
        if not self.accelerator.is_main_process:
            yield
            return
        client = GroupedClient(self.vllm_generation.vllm_client, specs, self.eos_token_id, self.timeout, failure)
        with swapped(self.vllm_generation, "vllm_client", client):
            yield


def make_generator(trainer, trl_generate: TRLGenerate) -> RolloutGenerator:
    """The generator for the trainer's backend, chosen once when the trainer is built."""
    eos = trainer.eos_token_ids[0]
    if not trainer.use_vllm:
        return RolloutGenerator(
            trl_generate,
            eos,
            unwrapped_model=lambda: trainer.accelerator.unwrap_model(trainer.model_wrapped),
            continuous_batching=trainer.use_transformers_continuous_batching,
        )
    if trainer.vllm_mode == "server":
        if trainer.accelerator.is_main_process:
            check_server_seats(
                trainer.vllm_generation.vllm_client, call_rows(trainer.args) * trainer.accelerator.num_processes
            )
        return ServerGenerator(
            trl_generate, eos, trainer.vllm_generation, trainer.accelerator, trainer.args.vllm_request_timeout
        )
    return ColocateGenerator(trl_generate, eos, trainer.vllm_generation)


# ---------------------------------------------------------------------------------------------------------------
# transformers: per-row caps in one padded `generate`


class RowCapStopping:
    """A transformers stopping criterion: row i is done once it has generated `caps[i]` tokens (None: never).

    A done row receives padding until the whole batch stops, and is cut to its cap afterwards; the call ends as soon
    as every row is done, so a batch whose long rows are capped ends early.
    """

    def __init__(self, caps: list[int | None]):
        self.caps = caps
        self._start = None
        self._limits = None

    def __call__(self, input_ids: torch.Tensor, scores, **kwargs) -> torch.Tensor:
        if self._start is None:  # first call: one token generated after the (padded) prompt
            self._start = input_ids.size(1) - 1
            big = torch.iinfo(torch.long).max
            self._limits = torch.tensor([big if c is None else c for c in self.caps], device=input_ids.device)
        return (input_ids.size(1) - self._start) >= self._limits


@contextmanager
def row_caps(model, caps: list[int | None]):
    """Give `model.generate` a `RowCapStopping(caps)` for the duration (TRL calls `unwrapped_model.generate`)."""
    original = model.generate

    def generate(*args, **kwargs):
        from transformers import StoppingCriteriaList

        criteria = StoppingCriteriaList(kwargs.pop("stopping_criteria", None) or [])
        criteria.append(RowCapStopping(caps))
        return original(*args, stopping_criteria=criteria, **kwargs)

    with swapped(model, "generate", generate):
        yield


# ---------------------------------------------------------------------------------------------------------------
# transformers continuous batching: one max_new_tokens per request


@contextmanager
def request_caps(model, caps: list[int | None]):
    """Give the requests of `model.generate_batch` one `max_new_tokens` each (TRL's continuous-batching path calls
    `unwrapped_model.generate_batch`, which takes one for the whole call).

    `generate_batch` opens its manager with `model.continuous_batching_context_manager` and submits the prompts with
    `manager.add_requests`; for the duration, that manager's `add_requests` submits each prompt with its own cap. A
    capped row then finishes at its cap and leaves the batch, freeing its slot and cache blocks for the other rows.
    """
    original = model.continuous_batching_context_manager

    @contextmanager
    def capped_manager(*args, **kwargs):
        with original(*args, **kwargs) as manager:
            # The manager may be a cached, persistent one: the caps must not outlive this call.
            capped = functools.partial(add_capped_requests, manager.add_requests, caps)
            with swapped(manager, "add_requests", capped):
                yield manager

    with swapped(model, "continuous_batching_context_manager", capped_manager):
        yield


def add_capped_requests(add_requests, caps: list[int | None], inputs, max_new_tokens=None, **kwargs) -> list[str]:
    """`ContinuousBatchingManager.add_requests` with request i capped at `min(caps[i], max_new_tokens)`: one call per
    distinct cap, the request ids returned in the order of `inputs` (the order `generate_batch` returns results in)."""
    if len(inputs) != len(caps):
        raise RuntimeError(f"{len(inputs)} prompts were submitted for {len(caps)} capped rows.")
    rows_by_limit = defaultdict(list)
    for row, cap in enumerate(caps):
        limit = max_new_tokens if cap is None else cap if max_new_tokens is None else min(cap, max_new_tokens)
        rows_by_limit[limit].append(row)
    request_ids = [None] * len(inputs)
    for limit, rows in rows_by_limit.items():
        submitted = add_requests([inputs[row] for row in rows], max_new_tokens=limit, **kwargs)
        for row, request_id in zip(rows, submitted, strict=True):
            request_ids[row] = request_id
    return request_ids


# ---------------------------------------------------------------------------------------------------------------
# vLLM colocate: an engine with a seat for every row of one call, and one SamplingParams per request


def call_rows(args) -> int:
    """The rows of MASA's largest training generation call on one process.

    TRL's calls hold the solution rows of a generation batch (`per_device_train_batch_size * steps_per_generation`).
    MASA's one call (`joint_generation`) also holds the M / G meta rows per solution row; with one call per kind the
    meta call has `rows * M / G` rows, more than the solution call whenever M > G.
    """
    layout = RolloutLayout(
        args.per_device_train_batch_size * args.steps_per_generation,
        args.num_generations,
        args.num_meta_generations,
        num_processes=args.world_size,
    )
    solution_rows, meta_rows = layout.num_local_rows, layout.num_local_meta_rows
    return solution_rows + meta_rows if args.generates_jointly else max(solution_rows, meta_rows)


def engine_seats(args) -> int:
    """The sequences a process's colocated vLLM engine must run at once to hold MASA's largest generation call.

    TRL builds the engine with `max_num_seqs = per_device_train_batch_size * vllm_tensor_parallel_size *
    steps_per_generation`: the solution rows of one call. On seats for the solutions alone, the meta rows of MASA's one
    call would wait in the engine's queue until solutions finish, and the two kinds would not be generated in parallel.
    """
    return call_rows(args) * args.vllm_tensor_parallel_size


@contextmanager
def colocated_engine_seats(args):
    """While TRL's `GRPOTrainer.__init__` runs, its colocated engine is built with `args.vllm_max_num_seqs` seats, or
    by default `engine_seats(args)` (never fewer than TRL's own).

    The engine's scheduler limit is fixed when it is built, so MASA sets it there, through the name TRL builds
    `VLLMGeneration` by; seats cost little memory (the KV cache is sized by `vllm_gpu_memory_utilization`).
    """
    if not (args.use_vllm and args.vllm_mode == "colocate"):
        yield
        return
    from trl.trainer import grpo_trainer

    build, chosen = grpo_trainer.VLLMGeneration, args.vllm_max_num_seqs

    def seated(*build_args, **kwargs):
        trl_seats = kwargs.get("max_num_seqs") or 0
        kwargs["max_num_seqs"] = chosen if chosen is not None else max(trl_seats, engine_seats(args))
        return build(*build_args, **kwargs)

    with swapped(grpo_trainer, "VLLMGeneration", seated):
        yield


class CappedLLM:
    """A vLLM `LLM` seen through TRL's colocate generation, with one `max_tokens` per request (row)."""

    def __init__(self, llm, caps: list[int | None]):
        self._llm, self._caps = llm, caps

    def generate(self, prompts, sampling_params, **kwargs):
        per_request = []
        for cap in self._caps:
            params = sampling_params.clone()
            params.max_tokens = sampling_params.max_tokens if cap is None else min(cap, sampling_params.max_tokens)
            per_request.append(params)
        return self._llm.generate(prompts, sampling_params=per_request, **kwargs)

    def __getattr__(self, name):
        return getattr(self._llm, name)


@contextmanager
def per_request_caps(vllm_generation, caps: list[int | None]):
    with swapped(vllm_generation, "llm", CappedLLM(vllm_generation.llm, caps)):
        yield


# ---------------------------------------------------------------------------------------------------------------
# vLLM server: one request per (n, cap), concurrently, with a timeout


def check_server_seats(client, rows: int) -> int | None:
    """Log the server's seats (`max_num_seqs`, set where it is launched) against the rows of one generation call.

    When the rows outnumber the seats, the rest wait and start as others finish; at the paper's scale (thousands of
    rows per step) that is unavoidable and harmless (the short meta rows fill the seats the long solutions free), so
    this is information for a throughput question, not a warning. Returns the seats (None: not reported)."""
    try:
        seats = client.get_server_info()["scheduler_config"]["max_num_seqs"]
    except Exception as error:  # noqa: BLE001 - informational only: TRL reports an unreachable server itself
        logger.info(f"Could not read the vLLM server's max_num_seqs ({type(error).__name__}: {error}).")
        return None
    if seats < rows:
        logger.info(
            f"The vLLM server at {getattr(client, 'base_url', '?')} runs at most {seats} sequences at once "
            f"(max_num_seqs); one generation call of this run holds {rows} rows over all processes, so {rows - seats} "
            f"wait for a free seat. If the server's memory allows, `--max-num-seqs {rows}` runs them all at once."
        )
    return seats


class GroupedClient:
    """A `VLLMClient` seen through TRL's server-mode generation, called with `n=1` and one prompt per row.

    `specs` holds `(kind, prompt_index, cap, skip)` for every row of the gathered batch, in TRL's order. Rows of one
    (kind, prompt) are samples of one prompt: it is sent once with `n` = their number. Prompts are grouped into one
    request per (n, cap), all sent concurrently (the server batches them); skipped rows are not requested and get
    one-token placeholders. The answers are reassembled in row order.

    A request that fails or takes longer than `timeout` seconds does not raise here: TRL's broadcast of the answer to
    the other processes must still happen, so every row gets a placeholder and the error is left in `failure[0]` for
    the caller to raise on every process after the broadcast.
    """

    def __init__(self, client, specs, eos_token_id: int, timeout: float, failure: list):
        self._client, self._specs, self._eos = client, specs, eos_token_id
        self._timeout, self._failure = timeout, failure

    def generate(self, prompts, n=1, max_tokens=16, **kwargs):
        if n != 1 or len(prompts) != len(self._specs):
            raise RuntimeError(f"GroupedClient expects one prompt per row with n=1, got {len(prompts)} and n={n}.")
        groups = defaultdict(list)  # (kind, prompt index) -> its rows
        for row, (kind, prompt_index, cap, skip) in enumerate(self._specs):
            if not skip:
                groups[(kind, prompt_index, cap)].append(row)
        requests = defaultdict(list)  # (n, cap) -> the groups sent in one request
        for key, rows in groups.items():
            requests[(len(rows), min(key[2] or max_tokens, max_tokens))].append(rows)
        answers = self._send(
            {
                (size, cap): dict(prompts=[prompts[rows[0]] for rows in members], n=size, max_tokens=cap, **kwargs)
                for (size, cap), members in requests.items()
            }
        )
        per_row = {}
        if answers is not None:
            for (size, cap), members in requests.items():
                answer = answers[(size, cap)]
                for k, rows in enumerate(members):
                    for s, row in enumerate(rows):
                        per_row[row] = {
                            key: answer[key][k * size + s] if answer.get(key) is not None else None
                            for key in ("completion_ids", "logprobs", "logprob_token_ids")
                        }
        placeholder = {"completion_ids": [self._eos], "logprobs": [[0.0]], "logprob_token_ids": [[self._eos]]}
        output = {
            "prompt_ids": [list(p) for p in prompts],
            "completion_ids": [],
            "logprobs": [],
            "logprob_token_ids": [],
        }
        for row in range(len(prompts)):
            part = per_row.get(row, placeholder)
            for key in ("completion_ids", "logprobs", "logprob_token_ids"):
                output[key].append(part[key] if part[key] is not None else placeholder[key])
        return output

    def _send(self, requests: dict) -> dict | None:
        """All requests at once, each in a daemon thread (a hung request must not keep the process alive)."""
        results, errors = {}, {}

        def run(key, kwargs):
            try:
                results[key] = self._client.generate(**kwargs)
            except Exception as error:  # noqa: BLE001 - any failure is reported below, on every process
                errors[key] = error

        threads = [threading.Thread(target=run, args=item, daemon=True) for item in requests.items()]
        deadline = time.monotonic() + self._timeout
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        server = getattr(self._client, "base_url", "the vLLM server")
        if any(thread.is_alive() for thread in threads):
            self._failure[0] = (
                f"The vLLM server at {server} did not answer {len(requests)} generation request(s) within "
                f"vllm_request_timeout={self._timeout:g} s. Check the server's log (out of memory? still loading?), "
                "or raise --vllm_request_timeout if generation is just slow."
            )
            return None
        if errors:
            error = next(iter(errors.values()))
            self._failure[0] = (
                f"A generation request to the vLLM server at {server} failed: {type(error).__name__}: {error}. "
                "Check that `trl vllm-serve` is running the same model and is reachable."
            )
            return None
        return results

    def __getattr__(self, name):
        return getattr(self._client, name)
