"""Generation backends: vLLM offline inference for real runs, transformers `generate` for CPU runs and tests.

Both take already tokenised prompts (the chat template is applied once, by [`encode_prompt`], so both backends see
the same tokens) and return, per request, `n` [`Completion`]s with their text, token count and finish reason
(`"stop"` or `"length"`, i.e. truncated at `max_new_tokens`).
"""

import importlib.util
import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


logger = logging.getLogger(__name__)

BACKENDS = ("auto", "vllm", "transformers")


@dataclass(frozen=True)
class SamplingConfig:
    """Sampling settings; the defaults are the paper's (temperature 0.6, top-p 1.0, 16k new tokens)."""

    temperature: float = 0.6
    top_p: float = 1.0
    top_k: int = -1
    max_new_tokens: int = 16384


@dataclass
class GenerationRequest:
    """`n` samples of one prompt; `sample_indices` says which samples of the problem they are (for logging)."""

    prompt_ids: list[int]
    n: int
    seed: int
    max_new_tokens: int | None = None
    sample_indices: list[int] | None = None


@dataclass
class Completion:
    text: str
    num_tokens: int
    finish_reason: str = "stop"


class Backend:
    """Interface: `generate(requests, sampling)` returns one list of `request.n` completions per request.

    `max_context` is the model's context in tokens (prompt and completion together) where the backend knows it: the
    run caps each request's new tokens to what its prompt leaves of it.
    """

    name = "base"
    tokenizer = None
    max_context: int | None = None

    def generate(self, requests: Sequence[GenerationRequest], sampling: SamplingConfig) -> list[list[Completion]]:
        raise NotImplementedError

    def close(self) -> None:
        pass


# ---------------------------------------------------------------------------------------------------------------
# The model: where it is and how long a context it has


class ModelNotFoundError(FileNotFoundError):
    pass


# What makes a local directory loadable: a config, weights, a (PEFT) adapter or a GGUF file (vLLM).
MODEL_FILE_PATTERNS = ("config.json", "*.safetensors", "pytorch_model*.bin", "adapter_config.json", "*.gguf")


def _checkpoint_step(path: Path) -> tuple[int, str]:
    match = re.fullmatch(r"checkpoint-(\d+)", path.name)
    return (int(match.group(1)) if match else -1, path.name)


def check_model_path(model: str) -> None:
    """Fail early and plainly when `model` is a local directory that holds no model.

    Without this, transformers takes such a directory for a tokenizer to convert and fails with a misleading "You
    need to have sentencepiece or tiktoken installed". The usual case is a training `output_dir` that holds only
    `checkpoint-N` folders: they are listed, by step, as the paths to pass. Anything that is not an existing
    directory (a Hub id, a GGUF file) is left to the loader.
    """
    path = Path(model).expanduser()
    if not path.is_dir() or any(next(path.glob(pattern), None) for pattern in MODEL_FILE_PATTERNS):
        return
    checkpoints = sorted(
        (p for p in path.glob("checkpoint-*") if p.is_dir() and _checkpoint_step(p)[0] >= 0), key=_checkpoint_step
    )
    message = f"no model in {model} (no config.json, *.safetensors or pytorch_model*.bin)"
    if checkpoints:
        names = ", ".join(p.name for p in checkpoints)
        latest = Path(model) / checkpoints[-1].name
        raise ModelNotFoundError(
            f"{message}; it holds {len(checkpoints)} checkpoint(s): {names}. Pass --model {latest} (the latest) or "
            "another checkpoint-N."
        )
    raise ModelNotFoundError(
        f"{message}. Pass the directory the model was saved to (config.json and the weights) or a Hub id."
    )


# The config keys vLLM reads for a model's context; it takes the smallest of those present, and so do we.
CONTEXT_KEYS = (
    "max_position_embeddings",
    "n_positions",
    "max_seq_len",
    "seq_length",
    "model_max_length",
    "max_sequence_length",
    "max_seq_length",
    "seq_len",
)


def context_from_config(config: dict[str, Any]) -> int | None:
    """The context length in tokens a model config allows, as vLLM derives it (RoPE scaling included), or None."""
    for candidate in (config.get("text_config") or {}, config):  # multimodal configs nest the language model's
        lengths = [candidate[k] for k in CONTEXT_KEYS if isinstance(candidate.get(k), int) and candidate[k] > 0]
        if lengths:
            break
    else:
        return None
    length = min(lengths)
    rope = candidate.get("rope_scaling") or candidate.get("rope_parameters") or {}
    rope_type = rope.get("rope_type", rope.get("type")) if isinstance(rope, dict) else None
    if isinstance(rope, dict) and "factor" in rope and rope_type not in (None, "default", "su", "longrope", "llama3"):
        if rope_type == "yarn" and rope.get("original_max_position_embeddings"):
            length = rope["original_max_position_embeddings"]
        length = int(length * rope["factor"])
    return length


def model_context_length(model: str) -> int | None:
    """The context of `model` (a local directory or a Hub id) from its config, without loading the weights.

    None when the config cannot be read (no config file, offline without a cached copy): the run then generates
    with the requested budget, as the backends would anyway.
    """
    path = Path(model).expanduser()
    try:
        if (path / "config.json").is_file():
            config = json.loads((path / "config.json").read_text(encoding="utf-8"))
        else:
            from transformers import PretrainedConfig

            config, _ = PretrainedConfig.get_config_dict(model)
    except Exception as err:  # noqa: BLE001 - any failure means "unknown", never a failed run
        logger.info("no context length for %s (%s): new tokens are not capped", model, err)
        return None
    return context_from_config(config) if isinstance(config, dict) else None


def load_tokenizer(model: str, *, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model, trust_remote_code=trust_remote_code)


# ---------------------------------------------------------------------------------------------------------------
# Prompts


def encode_prompt(tokenizer, messages: list[dict[str, str]], *, chat_template: bool = True) -> list[int]:
    """Token ids of a prompt: the chat template with the generation prompt, or the plain concatenated contents."""
    if chat_template:
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError(
                "the tokenizer has no chat template; pass --no-chat-template to prompt with the plain problem text"
            )
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])
    text = "\n\n".join(message["content"] for message in messages)
    return list(tokenizer(text)["input_ids"])


def vllm_available() -> bool:
    return importlib.util.find_spec("vllm") is not None


def resolve_backend_name(name: str) -> str:
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
    if name != "auto":
        return name
    try:
        import torch

        has_gpu = torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        has_gpu = False
    return "vllm" if has_gpu and vllm_available() else "transformers"


# ---------------------------------------------------------------------------------------------------------------
# vLLM


class VLLMBackend(Backend):
    """vLLM offline inference (`vllm.LLM.generate`), one `SamplingParams` per request (its own `n` and seed)."""

    name = "vllm"

    def __init__(
        self,
        model: str,
        *,
        tokenizer: str | None = None,
        tensor_parallel_size: int = 1,
        dtype: str = "bfloat16",
        max_model_len: int | None = None,
        gpu_memory_utilization: float = 0.9,
        seed: int = 0,
        trust_remote_code: bool = False,
        **llm_kwargs,
    ):
        try:
            from vllm import LLM, SamplingParams
        except ImportError as err:
            raise ImportError(
                "the vLLM backend needs vllm (pip install 'masa-trl[vllm]'); use --backend transformers without it"
            ) from err
        self._sampling_params = SamplingParams
        kwargs = dict(
            model=model,
            tokenizer=tokenizer or model,
            tensor_parallel_size=tensor_parallel_size,
            dtype="bfloat16" if dtype == "auto" else dtype,
            gpu_memory_utilization=gpu_memory_utilization,
            seed=seed,
            trust_remote_code=trust_remote_code,
        )
        if max_model_len is not None:
            kwargs["max_model_len"] = max_model_len
        kwargs.update(llm_kwargs)
        self.llm = LLM(**kwargs)
        self.tokenizer = self.llm.get_tokenizer()
        try:
            self.max_context = int(self.llm.llm_engine.model_config.max_model_len)
        except (AttributeError, TypeError, ValueError):
            self.max_context = max_model_len

    def generate(self, requests, sampling):
        params = []
        for request in requests:
            kwargs = dict(
                n=request.n,
                temperature=sampling.temperature,
                top_p=sampling.top_p,
                max_tokens=request.max_new_tokens or sampling.max_new_tokens,
                seed=request.seed,
            )
            if sampling.top_k and sampling.top_k > 0:
                kwargs["top_k"] = sampling.top_k
            params.append(self._sampling_params(**kwargs))
        prompts = [{"prompt_token_ids": list(request.prompt_ids)} for request in requests]
        outputs = self.llm.generate(prompts, sampling_params=params, use_tqdm=False)
        results = []
        for request, output in zip(requests, outputs, strict=True):
            completions = [
                Completion(o.text, len(o.token_ids), "length" if o.finish_reason == "length" else "stop")
                for o in output.outputs
            ]
            if len(completions) != request.n:
                raise RuntimeError(f"vLLM returned {len(completions)} completions for a request of n={request.n}")
            results.append(completions)
        return results


# ---------------------------------------------------------------------------------------------------------------
# transformers


class TransformersBackend(Backend):
    """`model.generate` with left padding, `batch_size` sequences per forward pass; for CPU runs and tests."""

    name = "transformers"

    def __init__(
        self,
        model,
        *,
        tokenizer=None,
        device: str | None = None,
        dtype: str = "auto",
        batch_size: int = 16,
        trust_remote_code: bool = False,
    ):
        import torch
        from transformers import AutoModelForCausalLM

        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if isinstance(model, str):
            if dtype == "auto":
                torch_dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
            else:
                torch_dtype = getattr(torch, dtype)
            tokenizer = tokenizer or load_tokenizer(model, trust_remote_code=trust_remote_code)
            model = AutoModelForCausalLM.from_pretrained(model, dtype=torch_dtype, trust_remote_code=trust_remote_code)
        if tokenizer is None:
            raise ValueError("pass the tokenizer together with a model object")
        self.model = model.to(device).eval()
        self.tokenizer = tokenizer
        self.max_context = context_from_config(model.config.to_dict())
        self.device = device
        self.batch_size = max(1, batch_size)
        eos = model.generation_config.eos_token_id
        if eos is None:
            eos = tokenizer.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, (list, tuple)) else [eos]) - {None}
        pad = tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else next(iter(self.eos_ids), 0)

    def generate(self, requests, sampling):
        import torch

        flat = [(r, request) for r, request in enumerate(requests) for _ in range(request.n)]
        results: list[list[Completion]] = [[] for _ in requests]
        for start in range(0, len(flat), self.batch_size):
            batch = flat[start : start + self.batch_size]
            max_new = max(requests[r].max_new_tokens or sampling.max_new_tokens for r, _ in batch)
            width = max(len(request.prompt_ids) for _, request in batch)
            input_ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
            attention = torch.zeros((len(batch), width), dtype=torch.long)
            for row, (_, request) in enumerate(batch):
                ids = torch.tensor(request.prompt_ids, dtype=torch.long)
                input_ids[row, width - len(ids) :] = ids
                attention[row, width - len(ids) :] = 1
            do_sample = sampling.temperature > 0
            kwargs = dict(max_new_tokens=max_new, do_sample=do_sample, pad_token_id=self.pad_id)
            if do_sample:
                kwargs.update(temperature=sampling.temperature, top_p=sampling.top_p)
                kwargs["top_k"] = sampling.top_k if sampling.top_k and sampling.top_k > 0 else None
            torch.manual_seed(batch[0][1].seed + start)
            with torch.no_grad():
                output = self.model.generate(
                    input_ids=input_ids.to(self.device), attention_mask=attention.to(self.device), **kwargs
                )
            for row, (r, request) in enumerate(batch):
                tokens = output[row, width:].tolist()
                limit = request.max_new_tokens or sampling.max_new_tokens
                tokens = tokens[:limit]
                stop = next((i for i, t in enumerate(tokens) if t in self.eos_ids), None)
                if stop is not None:
                    tokens, finish = tokens[: stop + 1], "stop"
                else:
                    finish = "length" if len(tokens) >= limit else "stop"
                text = self.tokenizer.decode(tokens, skip_special_tokens=True)
                results[r].append(Completion(text, len(tokens), finish))
        return results


def make_backend(
    name: str,
    model: str,
    *,
    tensor_parallel_size: int = 1,
    dtype: str = "auto",
    max_model_len: int | None = None,
    gpu_memory_utilization: float = 0.9,
    seed: int = 0,
    batch_size: int = 16,
    trust_remote_code: bool = False,
    device: str | None = None,
    tokenizer=None,
) -> Backend:
    """The backend `name` for `model`; `tokenizer` (transformers only) saves loading it a second time."""
    name = resolve_backend_name(name)
    check_model_path(model)
    if name == "vllm":
        return VLLMBackend(
            model,
            tensor_parallel_size=tensor_parallel_size,
            dtype=dtype,
            max_model_len=max_model_len,
            gpu_memory_utilization=gpu_memory_utilization,
            seed=seed,
            trust_remote_code=trust_remote_code,
        )
    return TransformersBackend(
        model,
        tokenizer=tokenizer,
        dtype=dtype,
        batch_size=batch_size,
        trust_remote_code=trust_remote_code,
        device=device,
    )
