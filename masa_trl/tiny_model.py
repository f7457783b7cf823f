"""Offline tiny-model kit: a random-init Qwen3 and a locally trained BPE tokenizer, saved as a Hub-style directory.

Tests, the CPU demo and users' own smoke tests need a model that loads with `from_pretrained` but downloads
nothing. [`build_tiny_model`] trains a byte-level BPE tokenizer on a generated corpus of math text (digits, LaTeX,
`\\boxed{}`, `<meta>` tags, JSON punctuation), wraps it as a [`~transformers.PreTrainedTokenizerFast`] with a
Qwen-style chat template, and saves it next to a randomly initialised `Qwen3ForCausalLM`.

>>> from masa_trl.tiny_model import build_tiny_model
>>> path = build_tiny_model("/tmp/tiny-qwen3")  # doctest: +SKIP
>>> model = AutoModelForCausalLM.from_pretrained(path)  # doctest: +SKIP
"""

import json
import random
from pathlib import Path


SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_WORDS = [
    "the",
    "of",
    "a",
    "is",
    "and",
    "to",
    "find",
    "what",
    "let",
    "think",
    "step",
    "by",
    "step",
    "output",
    "final",
    "answer",
    "within",
    "sum",
    "product",
    "number",
    "integer",
    "prime",
    "factor",
    "divisor",
    "remainder",
    "modular",
    "arithmetic",
    "equation",
    "quadratic",
    "formula",
    "root",
    "polynomial",
    "triangle",
    "circle",
    "angle",
    "area",
    "perimeter",
    "probability",
    "expected",
    "value",
    "combinatorics",
    "permutation",
    "combination",
    "binomial",
    "coefficient",
    "sequence",
    "series",
    "geometric",
    "arithmetic",
    "progression",
    "inequality",
    "function",
    "derivative",
    "integral",
    "limit",
    "vector",
    "matrix",
    "determinant",
    "parity",
    "symmetry",
    "induction",
    "proof",
    "case",
    "counting",
    "pigeonhole",
    "principle",
    "theorem",
    "lemma",
    "solution",
    "problem",
    "notion",
    "pass",
    "rate",
    "length",
    "reasoning",
    "solve",
    "compute",
    "therefore",
    "hence",
    "thus",
    "so",
    "we",
    "get",
    "check",
    "verify",
    "correct",
]

_LATEX = [r"\frac{%d}{%d}", r"\sqrt{%d}", r"%d^{%d}", r"\binom{%d}{%d}", r"%d \cdot %d", r"\pi", r"\le", r"\ge"]


def _math_expression(rng: random.Random) -> str:
    template = rng.choice(_LATEX)
    holes = template.count("%d")
    return template % tuple(rng.randint(0, 99) for _ in range(holes))


def generate_corpus(num_lines: int = 4000, seed: int = 0) -> list[str]:
    """Generate the synthetic training corpus of the tiny tokenizer (deterministic for a given seed)."""
    rng = random.Random(seed)
    lines = []
    for i in range(num_lines):
        kind = i % 4
        a, b = rng.randint(0, 999), rng.randint(0, 999)
        words = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(4, 16)))
        if kind == 0:
            lines.append(f"What is {a} + {b}? {words}. The answer is $\\boxed{{{a + b}}}$.")
        elif kind == 1:
            lines.append(f"Let's think step by step. {words} ${_math_expression(rng)}$ so \\boxed{{{a}}}")
        elif kind == 2:
            notions = [" ".join(rng.choice(_WORDS) for _ in range(2)) for _ in range(rng.randint(1, 3))]
            payload = {
                "math_notion": notions,
                "pass_rate": rng.randint(0, 8),
                "solution_length": rng.randint(128, 4096),
            }
            indent = rng.choice([None, 2])
            lines.append(f"<meta>{words}</meta>\n```json\n{json.dumps(payload, indent=indent)}\n```")
        else:
            lines.append(f"{words} {_math_expression(rng)} = {a} - {b} * {rng.randint(1, 9)} / ( {b} )")
    return lines


def build_tiny_tokenizer(
    vocab_size: int = 512,
    seed: int = 0,
    model_max_length: int = 2048,
    *,
    corpus: list[str] | None = None,
    individual_digits: bool = False,
):
    """Train a byte-level BPE tokenizer and wrap it as a `PreTrainedTokenizerFast` with a Qwen-style chat template.

    Args:
        vocab_size (`int`, *optional*, defaults to `512`): vocabulary size, the 3 special tokens included.
        seed (`int`, *optional*, defaults to `0`): seed of [`generate_corpus`].
        model_max_length (`int`, *optional*, defaults to `2048`): the tokenizer's `model_max_length`.
        corpus (`list[str]`, *optional*): training lines; default [`generate_corpus`] with `seed`.
        individual_digits (`bool`, *optional*, defaults to `False`): split every digit into its own token, as Qwen
            does, so that numbers are read digit by digit (what a tiny model needs to learn arithmetic).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False)
    if individual_digits:
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
    else:
        tokenizer.pre_tokenizer = byte_level
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(generate_corpus(seed=seed) if corpus is None else corpus, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        chat_template=CHAT_TEMPLATE,
        model_max_length=model_max_length,
        padding_side="left",
    )


def build_tiny_model(
    output_dir: str | Path,
    *,
    seed: int = 0,
    vocab_size: int = 512,
    hidden_size: int = 64,
    intermediate_size: int = 128,
    num_hidden_layers: int = 2,
    num_attention_heads: int = 2,
    num_key_value_heads: int = 1,
    head_dim: int = 32,
    max_position_embeddings: int = 2048,
    tokenizer=None,
) -> Path:
    """Build and save a tiny random-init `Qwen3ForCausalLM` and its tokenizer to `output_dir`.

    The same arguments always produce the same files. `head_dim` must be at least 32 so that vLLM's CPU attention
    backend can serve the model (it rejects 16). Pass `tokenizer` to reuse another tokenizer (e.g. a character-level
    one); by default a byte-level BPE tokenizer of `vocab_size` tokens is trained on a generated math corpus.

    Returns:
        `Path`: the directory, loadable with `AutoModelForCausalLM.from_pretrained` and
        `AutoTokenizer.from_pretrained`.
    """
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    if head_dim < 32:
        raise ValueError(f"head_dim={head_dim} is below 32, which vLLM's CPU attention rejects; use 32 or more.")
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    if tokenizer is None:
        tokenizer = build_tiny_tokenizer(vocab_size=vocab_size, seed=seed, model_max_length=max_position_embeddings)
    tokenizer.save_pretrained(output_dir)

    config = Qwen3Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        num_key_value_heads=num_key_value_heads,
        head_dim=head_dim,
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    # Seed a private generator state so that building a model does not disturb the caller's RNG.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen3ForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(output_dir)
    return output_dir
