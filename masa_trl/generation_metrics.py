"""Generation metrics of `GRPOTrainer`, recomputed over a subset of rows.

Under MASA-efficient a skipped prompt's rows hold one-token placeholders that were never generated. TRL computes its
`completions/*` and `sampling/*` metrics over every row; the trainer recomputes them, with the same definitions as
TRL 1.16 (`GRPOTrainer._generate` and `_generate_and_score_completions`), over the rows that were generated.
"""

from collections.abc import Callable

import torch


def completion_length_metrics(lengths: torch.Tensor, truncated: torch.Tensor) -> dict[str, float]:
    """`completions/*` over the given rows: lengths (tokens) and whether each row ended without EOS.

    With no row at all (every prompt skipped) the lengths are reported as 0, as TRL reports its terminated lengths
    when nothing terminated.
    """
    lengths = lengths.float()
    if lengths.numel() == 0:
        lengths, truncated = torch.zeros(1, device=lengths.device), torch.zeros(1, dtype=torch.bool)
    truncated = truncated.to(lengths.device).bool()
    terminated = lengths[~truncated]
    if terminated.numel() == 0:
        terminated = torch.zeros(1, device=lengths.device)
    return {
        "completions/mean_length": lengths.mean().item(),
        "completions/min_length": lengths.min().item(),
        "completions/max_length": lengths.max().item(),
        "completions/clipped_ratio": truncated.float().mean().item(),
        "completions/mean_terminated_length": terminated.mean().item(),
        "completions/min_terminated_length": terminated.min().item(),
        "completions/max_terminated_length": terminated.max().item(),
    }


def sampling_metrics(
    old_logps: torch.Tensor,
    sampling_logps: torch.Tensor,
    is_ratio: torch.Tensor,
    mask: torch.Tensor,
    gather: Callable[[torch.Tensor], torch.Tensor],
) -> dict[str, float]:
    """`sampling/*` (vLLM importance sampling) over the tokens of `mask`, gathered over processes by `gather`.

    `is_ratio` is `(B, T)` for token-level correction or `(B, 1)` for sequence-level correction; a sequence-level
    ratio counts for its row when the row has a token in `mask`. Every process must call it (it gathers).
    """
    mask = mask.bool()
    delta = torch.abs(old_logps - sampling_logps)
    delta = delta[mask & ~torch.isnan(delta)]
    ratios = is_ratio[mask.any(dim=1)].flatten() if is_ratio.size(1) == 1 else is_ratio[mask]
    zero = torch.zeros((), device=old_logps.device)

    def local(reduce, values):
        return reduce(values) if values.numel() > 0 else zero

    def gathered(values: torch.Tensor) -> torch.Tensor:
        return gather(values.reshape(1))

    return {
        "sampling/sampling_logp_difference/mean": gathered(local(torch.mean, delta)).mean().item(),
        "sampling/sampling_logp_difference/max": gathered(local(torch.max, delta)).max().item(),
        "sampling/importance_sampling_ratio/min": _nan_reduce(gathered(local(torch.min, ratios)), torch.min),
        "sampling/importance_sampling_ratio/mean": gathered(local(torch.mean, ratios)).nanmean().item(),
        "sampling/importance_sampling_ratio/max": _nan_reduce(gathered(local(torch.max, ratios)), torch.max),
    }


def _nan_reduce(values: torch.Tensor, reduce) -> float:
    finite = values[~torch.isnan(values)]
    return reduce(finite).item() if finite.numel() > 0 else float("nan")
