"""FLOPs estimates for generating and training with a decoder-only transformer, so the study's arms compare on compute.

Wall time on 2 shared CPU cores is noisy and tokens ignore that attention grows with context, so the study also puts
its arms on a FLOPs axis. The estimate follows Kaplan et al. 2020 (Scaling Laws for Neural Language Models, table 1):

    forward FLOPs of one token = 2 * N + 2 * n_layer * n_ctx * d_attn

where N is the number of matmul parameters (see [`ModelShape.matmul_params`]), d_attn = num_heads * head_dim and
n_ctx is the number of tokens the token attends to (itself included, so the i-th token of a sequence has n_ctx = i).
Summing over the positions i = a+1..b of one sequence gives the closed form used everywhere below:

    sum_{i=a+1..b} (2 N + 2 L i d_attn) = 2 N (b - a) + L d_attn (b (b + 1) - a (a + 1))

- Generation of a row with a p-token prompt and c completion tokens: prefill of positions 1..p, then one decoding
  step per completion token at positions p+1..p+c with a KV cache, i.e. positions 1..p+c in total. (Producing c
  tokens needs only positions 1..p+c-1; the one extra position per row keeps generation and training on the same
  footing.)
- Training on a sequence of n tokens: a full-sequence forward over positions 1..n, a backward of twice the forward,
  and one no-grad forward more per extra pass (e.g. the old-policy or reference log-probs).

These are estimates: no flash-attention or kernel effects, embeddings and norms ignored, the LM head counted at every
position (HF `generate` and TRL's log-prob forwards compute logits for the last prompt position and the completion
only, so prompt tokens are overcounted by 2 * hidden * vocab per pass), and prompts shared by several rows counted
once per row (no prefix caching, as in TRL). Padding is not counted: padded positions cost real FLOPs on CPU, but
they depend on how a batch happens to be packed, and leaving them out lets the arms compare on useful work.

>>> shape = ModelShape(64, 128, 2, 2, 1, 32, 512)
>>> shape.matmul_params
106496
>>> generation_flops(shape, [1], [0]) == forward_flops(shape, 1, 1)
True
"""

from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np


@dataclass(frozen=True)
class ModelShape:
    """The sizes of a decoder-only transformer that its FLOPs depend on (those of a transformers config)."""

    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    vocab_size: int

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, int | np.integer) or value < 1:
                raise ValueError(f"ModelShape.{f.name}={value!r} must be a positive integer.")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"num_attention_heads={self.num_attention_heads} is not a multiple of "
                f"num_key_value_heads={self.num_key_value_heads}; grouped-query attention needs it to be."
            )

    @classmethod
    def from_config(cls, config) -> "ModelShape":
        """Read the shape from a transformers config (or any object with the same attribute names).

        Args:
            config: an object with `hidden_size`, `intermediate_size`, `num_hidden_layers`, `num_attention_heads` and
                `vocab_size`; `num_key_value_heads` defaults to `num_attention_heads` (multi-head attention) and
                `head_dim` to `hidden_size // num_attention_heads`, as in the configs that lack them (e.g. GPT-2 style
                or Qwen2).
        """
        # Configs that predate grouped-query attention or derive head_dim lack these attributes, or set them to None.
        num_key_value_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        return cls(
            hidden_size=config.hidden_size,
            intermediate_size=config.intermediate_size,
            num_hidden_layers=config.num_hidden_layers,
            num_attention_heads=config.num_attention_heads,
            num_key_value_heads=num_key_value_heads,
            head_dim=head_dim,
            vocab_size=config.vocab_size,
        )

    @property
    def attention_dim(self) -> int:
        """d_attn = num_attention_heads * head_dim, the width of the queries (and of the attention output)."""
        return self.num_attention_heads * self.head_dim

    @property
    def matmul_params(self) -> int:
        """N, the parameters a token multiplies by, LM head included.

        N = num_hidden_layers * (hidden * (2 * heads * head_dim + 2 * kv_heads * head_dim) + 3 * hidden * intermediate)
        + hidden * vocab: per layer the q and o projections (hidden x heads * head_dim), the k and v projections
        (hidden x kv_heads * head_dim, grouped-query attention) and the gated MLP's gate, up and down matrices; then
        the LM head, which is a matmul at every position even when its weights are tied to the embeddings. Norms and
        biases are ignored.
        """
        attention = self.hidden_size * (2 * self.attention_dim + 2 * self.num_key_value_heads * self.head_dim)
        mlp = 3 * self.hidden_size * self.intermediate_size
        return self.num_hidden_layers * (attention + mlp) + self.hidden_size * self.vocab_size


def _lengths(values: Sequence[int], name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"{name} must be a flat list of per-row lengths, got an array of shape {array.shape}.")
    if not np.all(np.isfinite(array)) or np.any(array < 0):
        raise ValueError(f"{name} must hold non-negative finite lengths, got {values!r}.")
    return array


def _positions_flops(shape: ModelShape, start: np.ndarray, stop: np.ndarray) -> float:
    """Total forward FLOPs of positions start+1..stop of each row (the module docstring's closed form)."""
    n_params, n_layers, d_attn = shape.matmul_params, shape.num_hidden_layers, shape.attention_dim
    per_row = 2 * n_params * (stop - start) + n_layers * d_attn * (stop * (stop + 1) - start * (start + 1))
    return float(per_row.sum())


def forward_flops(shape: ModelShape, num_tokens: float, context: float) -> float:
    """FLOPs of a forward over `num_tokens` tokens: `num_tokens * (2 N + 2 L context d_attn)`.

    Args:
        shape: the model.
        num_tokens: how many tokens go through the model.
        context: the average number of tokens each of them attends to (itself included).
    """
    if num_tokens < 0 or context < 0:
        raise ValueError(f"num_tokens={num_tokens} and context={context} must both be non-negative.")
    per_token = 2 * shape.matmul_params + 2 * shape.num_hidden_layers * context * shape.attention_dim
    return float(num_tokens * per_token)


def generation_flops(shape: ModelShape, prompt_lengths: Sequence[int], completion_lengths: Sequence[int]) -> float:
    """FLOPs of generating every row: prefill of its prompt, then KV-cached decoding of its completion.

    A prompt of length p costs sum_{i=1..p} (2 N + 2 L i d_attn); the completion's j-th token sits at position p+j
    and costs 2 N + 2 L (p + j) d_attn. A prompt shared by G rows (GRPO's group) is passed G times and counted once
    per row, as TRL generates it without prefix caching.

    Args:
        shape: the model.
        prompt_lengths: the prompt length of each row, in tokens, padding excluded.
        completion_lengths: the number of tokens generated for each row (EOS included, padding excluded).
    """
    prompts = _lengths(prompt_lengths, "prompt_lengths")
    completions = _lengths(completion_lengths, "completion_lengths")
    if prompts.shape != completions.shape:
        raise ValueError(
            f"Got {len(prompts)} prompt lengths and {len(completions)} completion lengths; pass one of each per row."
        )
    return _positions_flops(shape, np.zeros_like(prompts), prompts) + _positions_flops(
        shape, prompts, prompts + completions
    )


def training_flops(
    shape: ModelShape, sequence_lengths: Sequence[int], *, forward_passes: int = 1, backward: bool = True
) -> float:
    """FLOPs of the training passes over every sequence.

    A sequence of n tokens costs F = sum_{i=1..n} (2 N + 2 L i d_attn) per forward; the total is
    `(forward_passes + 2 * backward) * F`: the forward that the loss backpropagates through, its backward at twice
    the forward, and `forward_passes - 1` extra no-grad forwards (the old-policy or reference log-probs).

    Args:
        shape: the model.
        sequence_lengths: the length of each trained sequence (prompt plus completion, padding excluded).
        forward_passes: forwards per sequence, the one with gradients included.
        backward: whether the first forward is backpropagated; `False` with `forward_passes=1` is a lone no-grad
            forward.
    """
    if forward_passes < 1:
        raise ValueError(f"forward_passes={forward_passes} must be at least 1 (the forward the loss is computed on).")
    lengths = _lengths(sequence_lengths, "sequence_lengths")
    return (forward_passes + 2 * int(backward)) * _positions_flops(shape, np.zeros_like(lengths), lengths)
