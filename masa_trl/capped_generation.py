"""Generation with per-prompt token caps, for MASA-efficient's early cutoff, on top of TRL's generation backends.

TRL builds one set of sampling parameters per generation call. These wrappers give each request its own cap without
copying TRL's generation code: they sit between TRL and the backend object it calls (the vLLM engine in colocate
mode, the HTTP client in server mode, the `GenerationConfig` for transformers) for the duration of one call.
"""

from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

from masa_trl.efficient import PromptPlan


@contextmanager
def generation_limit(generation_config, max_new_tokens: int):
    saved = generation_config.max_new_tokens
    generation_config.max_new_tokens = max_new_tokens
    try:
        yield
    finally:
        generation_config.max_new_tokens = saved


class CappedLLM:
    """A vLLM `LLM` seen through TRL's colocate generation, with one `max_tokens` per request (row)."""

    def __init__(self, llm, caps: list[int]):
        self._llm, self._caps = llm, caps

    def generate(self, prompts, sampling_params, **kwargs):
        per_request = []
        for cap in self._caps:
            params = sampling_params.clone()
            params.max_tokens = min(cap, sampling_params.max_tokens)
            per_request.append(params)
        return self._llm.generate(prompts, sampling_params=per_request, **kwargs)

    def __getattr__(self, name):
        return getattr(self._llm, name)


@contextmanager
def per_request_caps(vllm_generation, caps: list[int]):
    llm = vllm_generation.llm
    vllm_generation.llm = CappedLLM(llm, caps)
    try:
        yield
    finally:
        vllm_generation.llm = llm


class CappedClient:
    """A `VLLMClient` seen through TRL's server-mode generation: skipped prompts are not requested, the others are
    sent as one request per distinct cap, concurrently (the server batches them), and the answers are reassembled in
    order, with one-token placeholders for the skipped prompts."""

    def __init__(self, client, plans: list[PromptPlan], max_length: int, eos_token_id: int):
        self._client, self._plans, self._max_length, self._eos = client, plans, max_length, eos_token_id

    def generate(self, prompts, n=1, max_tokens=16, **kwargs):
        groups = defaultdict(list)
        for j, plan in enumerate(self._plans):
            if not plan.skip:
                groups[min(plan.cap or max_tokens, max_tokens)].append(j)
        with ThreadPoolExecutor(max_workers=max(1, len(groups))) as pool:
            futures = {
                cap: pool.submit(self._client.generate, [prompts[j] for j in rows], n=n, max_tokens=cap, **kwargs)
                for cap, rows in groups.items()
            }
            answers = {cap: future.result() for cap, future in futures.items()}
        per_prompt = {}
        for cap, rows in groups.items():
            answer = answers[cap]
            for k, j in enumerate(rows):
                block = slice(k * n, (k + 1) * n)
                per_prompt[j] = {
                    key: answer[key][block] if answer.get(key) is not None else None
                    for key in ("completion_ids", "logprobs", "logprob_token_ids")
                }
        placeholder = {
            "completion_ids": [[self._eos]] * n,
            "logprobs": [[[0.0]]] * n,
            "logprob_token_ids": [[[self._eos]]] * n,
        }
        output = {
            "prompt_ids": [list(p) for p in prompts],
            "completion_ids": [],
            "logprobs": [],
            "logprob_token_ids": [],
        }
        for j in range(len(prompts)):
            part = per_prompt.get(j, placeholder)
            for key in ("completion_ids", "logprobs", "logprob_token_ids"):
                output[key].extend(part[key] if part[key] is not None else placeholder[key])
        return output

    def __getattr__(self, name):
        return getattr(self._client, name)
