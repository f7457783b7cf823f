r"""The demo's task: sums with a difficulty knob, their two prompts, the supervised targets, and the tiny model.

A problem is a compact sum such as `37+5+81` (see [`masa_trl.arithmetic.sum_problem`]); the difficulty cells are
(1..6 terms) x (1 or 2 digits). The policy sees two chat prompts per problem, rendered by the tokenizer's chat template
exactly as `MASAGRPOTrainer` renders them:

- solution: `Solve: 37+5+81`, answered by `\boxed{123}` (checked by the project's answer reward,
  [`masa_trl.math_reward.math_accuracy_reward`]);
- meta: `Predict: 37+5+81` (the `meta_prompt_template` [`META_TEMPLATE`], no system message), answered by the
  strict JSON object of the paper, `{"math_notion": [...], "pass_rate": k, "solution_length": n}`, without `<meta>`
  reasoning (the parser does not need it, and a 0.5M-parameter model has nothing to reason with).

The answers are bare, so a correct solution contains no word but "boxed" and the answer: the notion reward (notions
found in more correct than incorrect solutions) is 0 for every notion a meta rollout can sensibly write. The length
reward is meaningful: a solution is `\boxed{` + one token per digit + `}` + EOS, so its length tells how large the sum
is, which the predictor can read off the problem.

>>> solution_messages("37+5+81")
[{'role': 'user', 'content': 'Solve: 37+5+81'}]
>>> solution_target("123")
'\\boxed{123}'
"""

import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path

from masa_trl.arithmetic import SUM_CELLS, sum_problem
from masa_trl.meta import format_meta_prediction


SOLUTION_TEMPLATE = "Solve: {problem}"
# The MASAConfig.meta_prompt_template of the demo: it must contain {problem}; the warm start trains on exactly it.
META_TEMPLATE = "Predict: {problem}"
# Notions the warm start writes at random (1 or 2 per target). None of them can occur in a bare `\boxed{N}` answer.
NOTIONS = ("addition", "carrying", "place value", "column addition", "mental arithmetic", "digit sum")


def solution_messages(problem: str) -> list[dict[str, str]]:
    """The solution prompt, a one-message conversation: `Solve: {problem}`."""
    return [{"role": "user", "content": SOLUTION_TEMPLATE.format(problem=problem)}]


def meta_messages(problem: str) -> list[dict[str, str]]:
    """The meta prompt as `MASAGRPOTrainer` builds it with `meta_prompt_template=META_TEMPLATE` and no system message."""
    from masa_trl.templates import meta_prompt

    # The range arguments are unused by META_TEMPLATE; they only have to be valid.
    return meta_prompt(problem, min_length=1, max_length=1, system_prompt=None, template=META_TEMPLATE)


def solution_target(answer: str) -> str:
    r"""The supervised solution: `\boxed{answer}` (the chat template's end token is appended by the caller)."""
    return f"\\boxed{{{answer}}}"


def random_meta_target(rng: random.Random, *, pass_rate_scale: int, min_length: int, max_length: int) -> str:
    """A meta target that carries no information about the problem: uniform pass rate and length, random notions.

    The warm start teaches the format only; what the numbers should be is left to MASA's self-alignment rewards.
    """
    notions = rng.sample(NOTIONS, rng.randint(1, 2))
    return format_meta_prediction(
        notions, rng.randint(0, pass_rate_scale), rng.randint(min_length, max_length), reasoning=None
    )


def tokenizer_corpus(num_lines: int = 8000, seed: int = 0) -> list[str]:
    """Lines in the demo's formats, for the BPE merges: prompts, boxed answers and meta JSON."""
    rng = random.Random(seed)
    lines = []
    for i in range(num_lines):
        terms, digits = rng.choice(SUM_CELLS)
        problem, answer = sum_problem(rng, terms, digits)
        if i % 2:
            lines.append(f"user\n{SOLUTION_TEMPLATE.format(problem=problem)}\nassistant\n{solution_target(answer)}")
        else:
            meta = random_meta_target(rng, pass_rate_scale=8, min_length=1, max_length=48)
            lines.append(f"user\n{META_TEMPLATE.format(problem=problem)}\nassistant\n{meta}")
    return lines


@dataclass(frozen=True)
class DemoModelSpec:
    """The demo model: a Qwen3 of 0.54M parameters and a digit-level byte BPE tokenizer (vocabulary about 336).

    Measured by the prototype on 2 cores: 4 layers (1.03M) or longer worked solutions learn too little in a 3-minute
    warm start; 2 layers reach pass rates from near 1 to near 0 across the cells.
    """

    vocab_size: int = 336
    hidden_size: int = 128
    intermediate_size: int = 512
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    head_dim: int = 32
    max_position_embeddings: int = 256
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def build_demo_model(
    output_dir: str | Path, spec: DemoModelSpec = DemoModelSpec(), *, corpus: list[str] | None = None
) -> Path:
    """Build the random-init demo model and its tokenizer into `output_dir` (deterministic for a given spec).

    `corpus` (the lines the BPE merges are learnt from) defaults to the demo task's [`tokenizer_corpus`]."""
    from masa_trl.tiny_model import build_tiny_model, build_tiny_tokenizer

    tokenizer = build_tiny_tokenizer(
        vocab_size=spec.vocab_size,
        seed=spec.seed,
        model_max_length=spec.max_position_embeddings,
        corpus=tokenizer_corpus(seed=spec.seed) if corpus is None else corpus,
        individual_digits=True,
    )
    return build_tiny_model(
        output_dir,
        seed=spec.seed,
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_hidden_layers,
        num_attention_heads=spec.num_attention_heads,
        num_key_value_heads=spec.num_key_value_heads,
        head_dim=spec.head_dim,
        max_position_embeddings=spec.max_position_embeddings,
        tokenizer=tokenizer,
    )


def settings_digest(settings: dict) -> str:
    """A short stable hash of JSON-serialisable settings (cache keys)."""
    import hashlib

    text = json.dumps(settings, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:12]
