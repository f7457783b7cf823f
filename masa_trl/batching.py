"""Joining the solution and meta halves of a MASA generation batch into one batch for TRL's loss."""

import torch
import torch.nn.functional as F


# How each per-row tensor of GRPOTrainer's generation batch is padded when two batches of different widths are joined.
# Padded positions are masked out of the loss by `completion_mask` / `prompt_mask`.
_LEFT_PADDED = {"prompt_ids", "prompt_mask"}
_RIGHT_PADDED = {
    "completion_ids",
    "completion_mask",
    "old_per_token_logps",
    "sampling_per_token_logps",
    "ref_per_token_logps",
    "importance_sampling_ratio",
}
_ROW_VECTORS = {"advantages", "is_meta", "trained"}


def _pad_width(tensor: torch.Tensor, width: int, value: float, left: bool) -> torch.Tensor:
    missing = width - tensor.size(1)
    if missing == 0:
        return tensor
    return F.pad(tensor, (missing, 0) if left else (0, missing), value=value)


def concat_rollout_batches(first: dict, second: dict, pad_token_id: int) -> dict:
    """Concatenate two generation batches of `GRPOTrainer._generate_and_score_completions` along the rows.

    Prompts stay left-padded and completions right-padded; `num_items_in_batch` (a global token count) is summed.
    Both batches must carry the same keys: a key present in only one of them would leave some rows without a tensor
    the loss needs, so it raises.
    """
    if first.keys() != second.keys():
        raise ValueError(f"Cannot join generation batches with different keys: {sorted(first)} vs {sorted(second)}.")
    joined = {}
    for key, a in first.items():
        b = second[key]
        if key == "num_items_in_batch":
            joined[key] = a + b
        elif key in _ROW_VECTORS:
            joined[key] = torch.cat([a, b])
        elif key in _LEFT_PADDED or key in _RIGHT_PADDED:
            left = key in _LEFT_PADDED
            value = pad_token_id if key in ("prompt_ids", "completion_ids") else 0
            width = max(a.size(1), b.size(1))
            joined[key] = torch.cat([_pad_width(a, width, value, left), _pad_width(b, width, value, left)])
        else:
            raise NotImplementedError(f"MASA does not know how to join the generation-batch field {key!r}.")
    return joined


def select_rows(batch: dict, keep: torch.Tensor) -> dict:
    """The rows of a (micro-)batch where `keep` is true; `num_items_in_batch`, a global count, is kept as it is.

    Like `concat_rollout_batches`, it refuses fields it does not know, which it could not slice safely.
    """
    selected = {}
    for key, value in batch.items():
        if key == "num_items_in_batch":
            selected[key] = value
        elif key in _ROW_VECTORS or key in _LEFT_PADDED or key in _RIGHT_PADDED:
            selected[key] = value[keep]
        else:
            raise NotImplementedError(f"MASA does not know how to select rows of the batch field {key!r}.")
    return selected
