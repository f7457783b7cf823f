"""DAPO's dynamic sampling on TRL: keep drawing generation batches until the training batch holds only informative groups.

DAPO (arXiv 2503.14476) drops every prompt whose G rollouts all get the same correctness reward (their group-relative
advantage is zero, so they only dilute the gradient) and keeps generating until the batch is full. TRL has no such
filter (TRL issue #3708). This module follows verl's DAPO recipe (`recipe/dapo/dapo_ray_trainer.py`):

1. generate and score one generation batch (TRL's pipeline, unchanged: rewards, log-probs, advantages);
2. keep the groups whose correctness reward has a standard deviation above 0 (verl: `np.std(metric) > 0`);
3. while fewer than the training batch's number of prompts are kept, draw another generation batch and repeat; the
   surplus of the last round is discarded, in order;
4. after `dynamic_sampling_max_rounds` rounds without a full batch, fail with an error naming the setting, or, with
   `dynamic_sampling_partial`, fill the batch with filtered groups (zero advantage, as GRPO trains them) and warn.

Where the extra prompts come from. verl draws every round from its one dataloader. Transformers' training loop owns
TRL's dataloader (and repeats each generation batch `steps_per_generation * num_iterations` times), so extra rounds
here draw from a second, seeded stream over the same training set (`PromptStream`: a fresh permutation per pass),
whose position is checkpointed; round 1 is always TRL's own batch. A prompt may therefore appear in both streams in
one epoch, which verl's single stream avoids; resuming neither replays nor skips either stream.

Distributed: the keep decision is made from gathered rewards, so every process runs the same rounds and the same
collectives; the kept rows are gathered from all processes and every process takes an equal, contiguous share of
them, so ranks whose prompts were all filtered still train as many rows as the others.

MASA + DAPO: a prompt is kept or dropped as a whole, its G solution and M meta rows together. A filtered prompt's meta
rewards are valid (its true pass rate is 0 or 1), but keeping its meta rows would unbalance the G:M layout and
train the meta rollouts on exactly the prompts DAPO decided not to train on. MASA-efficient composes: a gated
(skipped) prompt never reaches the filter (no solution rollouts, not kept); an audited prompt is judged like any
other, but its solution rows carry no loss by design, so it is never kept.
"""

import math
import time
from dataclasses import dataclass, field

import torch
from accelerate.utils import gather_object
from transformers.utils import logging
from trl import GRPOConfig

from masa_trl.batching import _LEFT_PADDED, _RIGHT_PADDED, _ROW_VECTORS


logger = logging.get_logger(__name__)


@dataclass
class DynamicSamplingArguments:
    """The dynamic-sampling fields shared by [`DAPOConfig`] and [`~masa_trl.MASAConfig`].

    Parameters:
        dynamic_sampling (`bool`, *optional*, defaults to `False`):
            DAPO's dynamic sampling: train only on groups whose correctness reward is not constant, generating more
            batches until the training batch is full.
        dynamic_sampling_max_rounds (`int`, *optional*, defaults to `10`):
            Generation batches per training step at most (verl's `max_num_gen_batches`, which must be positive here:
            a dataset whose prompts are all constant would otherwise loop forever).
        dynamic_sampling_partial (`bool`, *optional*, defaults to `False`):
            After `dynamic_sampling_max_rounds` rounds without a full batch, train on the kept groups padded with
            filtered ones (zero advantage) and warn, instead of failing.
        dynamic_sampling_reward (`str` or `None`, *optional*, defaults to `None`):
            Name of the reward function whose per-group spread decides (verl's `metric`); `None`: the correctness
            reward (MASA's `correctness_reward`, else the first reward function).
    """

    dynamic_sampling: bool = field(
        default=False,
        metadata={"help": "DAPO dynamic sampling: train only on groups whose correctness reward is not constant."},
    )
    dynamic_sampling_max_rounds: int = field(
        default=10,
        metadata={"help": "Generation batches per training step at most before failing (or going partial)."},
    )
    dynamic_sampling_partial: bool = field(
        default=False,
        metadata={
            "help": "After the last round, train on a partially filtered batch (with a warning) instead of failing."
        },
    )
    dynamic_sampling_reward: str | None = field(
        default=None,
        metadata={"help": "Reward function whose group spread decides; default: the correctness reward."},
    )

    def _check_dynamic_sampling(self) -> None:
        if self.dynamic_sampling and self.dynamic_sampling_max_rounds < 1:
            raise ValueError(
                f"dynamic_sampling_max_rounds must be at least 1, got {self.dynamic_sampling_max_rounds}: an unbounded "
                "number of rounds never ends on a dataset whose prompts all score the same. Set "
                "--dynamic_sampling_max_rounds (verl's max_num_gen_batches), e.g. 10."
            )


@dataclass
class DAPOConfig(DynamicSamplingArguments, GRPOConfig):
    """[`~trl.GRPOConfig`] with DAPO's dynamic sampling (see `masa_trl.dynamic_sampling`)."""

    def __post_init__(self):
        super().__post_init__()
        self._check_dynamic_sampling()


def informative_groups(scores: torch.Tensor) -> list[bool]:
    """Per group (row of `scores`, one column per rollout), whether its score spread is above 0; NaN rows: no."""
    keep = []
    for row in scores:
        if torch.isnan(row).any():  # an unscored or untrained group (gated, audited, gold unparsable)
            keep.append(False)
        else:
            keep.append(row.numel() == 1 or bool(row.std(unbiased=False) > 0))
    return keep


class PromptStream:
    """Prompt indices for the extra rounds: seeded permutations of the training set, one pass after another."""

    def __init__(self, size: int, seed: int):
        if size < 1:
            raise ValueError("dynamic sampling needs a non-empty training set with a known length")
        self.size, self.seed, self.epoch, self.position = size, seed, 0, 0

    def _order(self) -> list[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return torch.randperm(self.size, generator=generator).tolist()

    def take(self, count: int) -> list[int]:
        taken, order = [], self._order()
        while len(taken) < count:
            if self.position == self.size:
                self.epoch, self.position, order = self.epoch + 1, 0, None
                order = self._order()
            taken.append(order[self.position])
            self.position += 1
        return taken

    def state_dict(self) -> dict:
        return {"seed": self.seed, "epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.seed, self.epoch, self.position = state["seed"], state["epoch"], state["position"]


def gather_batch(batch: dict, accelerator, pad_token_id: int) -> dict:
    """Every process's rows of a generation batch, on every process (widths padded across processes first)."""
    gathered = {}
    for key, value in batch.items():
        if value is None or key == "num_items_in_batch":
            gathered[key] = value
        elif key in _ROW_VECTORS:
            gathered[key] = accelerator.gather(value)
        elif key in _LEFT_PADDED or key in _RIGHT_PADDED:
            pad = pad_token_id if key in ("prompt_ids", "completion_ids") else 0
            padded = accelerator.pad_across_processes(value, dim=1, pad_index=pad, pad_first=key in _LEFT_PADDED)
            gathered[key] = accelerator.gather(padded)
        else:
            raise NotImplementedError(f"Dynamic sampling does not know how to gather the batch field {key!r}.")
    return gathered


def concat_and_select(parts: list[tuple[dict, list[int]]], pad_token_id: int) -> dict:
    """The rows `parts[i][1]` of each gathered batch `parts[i][0]`, joined in order (widths padded to the widest)."""
    from masa_trl.batching import _pad_width

    out = {}
    keys = parts[0][0].keys()
    for key in keys:
        values = [(batch[key], rows) for batch, rows in parts]
        if values[0][0] is None or key == "num_items_in_batch":
            out[key] = values[0][0]
            continue
        index = [torch.as_tensor(rows, dtype=torch.long, device=v.device) for v, rows in values]
        if key in _ROW_VECTORS:
            out[key] = torch.cat([v[i] for (v, _), i in zip(values, index, strict=True)])
            continue
        width = max(v.size(1) for v, _ in values)
        left = key in _LEFT_PADDED
        pad = pad_token_id if key in ("prompt_ids", "completion_ids") else 0
        out[key] = torch.cat([_pad_width(v[i], width, pad, left) for (v, _), i in zip(values, index, strict=True)])
    return out


class DynamicSamplingMixin:
    """Dynamic sampling around `_generate_and_score_completions` of a GRPO-family trainer (module docstring).

    The trainer provides `_dynamic_sampling_scores()` (the deciding reward of the latest round, one row per prompt of
    the gathered batch, NaN for rows that cannot train), `_dynamic_sampling_rows(batch)` (the gathered prompt index
    of each local row of the returned batch) and `_dynamic_sampling_solution_tokens(batch)` (per local row, the
    solution tokens generated for it: 0 for meta rows and never-generated placeholders).
    """

    def _deciding_reward_index(self, default: int) -> int:
        """The column of the reward whose group spread decides (`dynamic_sampling_reward`, else `default`)."""
        if not isinstance(self.args, DynamicSamplingArguments):
            raise TypeError(
                f"{type(self).__name__} needs a config with the dynamic-sampling fields (DAPOConfig or MASAConfig), got "
                f"{type(self.args).__name__}."
            )
        name = self.args.dynamic_sampling_reward
        if name is None:
            return default
        if name not in self.reward_func_names:
            raise ValueError(
                f"dynamic_sampling_reward={name!r} names no reward function; they are {self.reward_func_names}. Set "
                "--dynamic_sampling_reward to one of them."
            )
        return self.reward_func_names.index(name)

    def _generate_and_score_completions(self, inputs):
        if not (self.args.dynamic_sampling and self.model.training):
            return super()._generate_and_score_completions(inputs)
        if not hasattr(self, "_prompt_stream"):
            self._prompt_stream = PromptStream(len(self.train_dataset), self.args.seed + 1)
        accelerator = self.accelerator
        group_size = self.num_generations
        num_prompts = len(inputs) * accelerator.num_processes // group_size
        pad_id = self._tokenizer.pad_token_id

        kept, filtered, seconds = [], [], []
        generated, dropped, wasted_tokens = 0, 0, 0.0
        rounds = 0
        while True:
            rounds += 1
            start = time.perf_counter()
            batch = super()._generate_and_score_completions(inputs)
            keep = informative_groups(self._dynamic_sampling_scores())
            rows = gather_object(self._dynamic_sampling_rows(batch))
            lengths = gather_object(self._dynamic_sampling_solution_tokens(batch))
            full = gather_batch(batch, accelerator, pad_id)
            by_prompt, tokens = {}, {}
            for row, (prompt, length) in enumerate(zip(rows, lengths, strict=True)):
                by_prompt.setdefault(prompt, []).append(row)
                tokens[prompt] = tokens.get(prompt, 0) + length
            missing = num_prompts - len(kept)
            for prompt in range(len(keep)):
                if keep[prompt] and missing > 0:
                    kept.append((full, by_prompt[prompt]))
                    missing -= 1
                    generated += 1
                    continue
                if self.args.dynamic_sampling_partial and len(filtered) < num_prompts:  # kept only to pad with
                    filtered.append((full, by_prompt[prompt]))
                if tokens[prompt]:  # generated, then thrown away (a gated prompt was never generated)
                    generated += 1
                    dropped += 1
                    wasted_tokens += tokens[prompt]
            seconds.append(time.perf_counter() - start)
            if len(kept) == num_prompts:
                break
            if rounds >= self.args.dynamic_sampling_max_rounds:
                if not self.args.dynamic_sampling_partial:
                    raise RuntimeError(
                        f"Dynamic sampling kept {len(kept)} of the {num_prompts} prompts a training batch needs after "
                        f"dynamic_sampling_max_rounds={self.args.dynamic_sampling_max_rounds} generation batches: "
                        "almost every prompt gets the same reward on all its rollouts (all solved or all failed). "
                        "Raise --dynamic_sampling_max_rounds, filter the dataset's difficulty, or set "
                        "--dynamic_sampling_partial true to train on a partially filtered batch."
                    )
                logger.warning(
                    f"Dynamic sampling: only {len(kept)} of {num_prompts} prompts informative after {rounds} rounds; "
                    "the batch is filled with filtered (zero-advantage) groups (dynamic_sampling_partial)."
                )
                kept.extend(filtered[: num_prompts - len(kept)])
                break
            inputs = self._next_round_inputs(len(inputs), num_prompts, group_size)

        joined = concat_and_select(_merge_parts(kept), pad_id)
        total = joined["completion_mask"].size(0)
        share = total // accelerator.num_processes
        start = accelerator.process_index * share
        local = {
            key: value if value is None or key == "num_items_in_batch" else value[start : start + share]
            for key, value in joined.items()
        }
        # num_items_in_batch is the global token count of the batch TRL normalises the loss by.
        local["num_items_in_batch"] = joined["completion_mask"].sum()
        self._record_dynamic_sampling(rounds, generated, dropped, wasted_tokens, seconds)
        self._after_dynamic_sampling(rounds)
        return local

    def _next_round_inputs(self, num_local: int, num_prompts: int, group_size: int) -> list[dict]:
        """This process's share of a fresh generation batch from the prompt stream (TRL's layout: G rows each)."""
        prompts = self._prompt_stream.take(num_prompts)
        rows = [index for index in prompts for _ in range(group_size)]
        first = self.accelerator.process_index * num_local
        return [self.train_dataset[i] for i in rows[first : first + num_local]]

    def _record_dynamic_sampling(self, rounds, generated, filtered, wasted_tokens, seconds) -> None:
        metrics = self._metrics["train"]
        metrics["dynamic_sampling/num_gen_batches"].append(float(rounds))
        metrics["dynamic_sampling/filtered_frac"].append(filtered / generated if generated else math.nan)
        metrics["dynamic_sampling/wasted_solution_tokens"].append(float(wasted_tokens))
        metrics["dynamic_sampling/round_seconds"].append(sum(seconds) / len(seconds))

    def _after_dynamic_sampling(self, rounds: int) -> None:
        """Hook for the trainer: called once per training batch, after its `rounds` generation batches."""

    # Checkpoints: the prompt stream's position, so that a resumed run neither replays nor skips extra prompts.
    def _save_checkpoint(self, model, trial):
        super()._save_checkpoint(model, trial)
        if hasattr(self, "_prompt_stream"):
            import json
            from pathlib import Path

            from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

            folder = Path(self._get_output_dir(trial=trial)) / f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
            path = folder / f"dynamic_sampling_rank{self.accelerator.process_index}.json"
            path.write_text(json.dumps(self._prompt_stream.state_dict()))

    def _load_optimizer_and_scheduler(self, checkpoint):
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is None:
            return
        import json
        from pathlib import Path

        path = Path(checkpoint) / f"dynamic_sampling_rank{self.accelerator.process_index}.json"
        if path.exists():
            self._prompt_stream = PromptStream(len(self.train_dataset), self.args.seed + 1)
            self._prompt_stream.load_state_dict(json.loads(path.read_text()))


def _merge_parts(parts: list[tuple[dict, list[int]]]) -> list[tuple[dict, list[int]]]:
    """Consecutive selections from the same gathered batch as one (fewer concatenations)."""
    merged: list[tuple[dict, list[int]]] = []
    for batch, rows in parts:
        if merged and merged[-1][0] is batch:
            merged[-1][1].extend(rows)
        else:
            merged.append((batch, list(rows)))
    return merged
