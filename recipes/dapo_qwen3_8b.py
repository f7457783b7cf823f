"""DAPO on Qwen3-8B-Base and DeepScaleR: the second baseline of the MASA paper (arXiv 2510.03259, section 4), with
every setting of `grpo_qwen3_8b.py` (imported below, with its training code) plus DAPO (arXiv 2503.14476) as the
paper ran it: "we adopted DAPO without the overlong penalty as the baseline".

What this recipe includes from DAPO, on `masa_trl.DAPOTrainer` (TRL's GRPOTrainer with dynamic sampling):
- clip-higher: clip range 0.2 / 0.28 (`epsilon`, `epsilon_high`), as in the GRPO baseline and MASA;
- token-level policy-gradient loss (`loss_type="dapo"`), as in the GRPO baseline and MASA;
- dynamic sampling, DAPO's main ingredient: groups whose G rollouts all get the same answer reward are dropped and
  generation batches are drawn until the training batch is full (verl's DAPO recipe; at most
  `--dynamic_sampling_max_rounds` 10 generation batches per step, then an error; `masa_trl.dynamic_sampling`);
- no KL term (`beta=0.0`).
What it leaves out, as the paper did:
- the soft overlong punishment (a reward falling from 0 to -1 over the last L_cache tokens): the paper found it hurt
  accuracy at an 8k response limit. `--soft_overlong_punishment true` puts it back (`trl.rewards`
  `get_soft_overlong_punishment`, L_cache `--soft_punish_cache`, default max_completion_length // 5 = 1638, DAPO's
  4096 of 20480);
- overlong filtering (`mask_truncated_completions`): DAPO's final recipe replaces it by the soft punishment (verl's
  DAPO recipe does not filter), so "DAPO without the overlong penalty" has neither; `--mask_truncated_completions
  true` turns it on.

Hardware and batch layout are the GRPO baseline's: one node of 8 x 80 GB GPUs, vLLM on 4, training on 4, 2 x 4
processes x 256 accumulation steps = 2048 solution rollouts (128 prompts) and one optimizer step per training step;
with dynamic sampling a step may generate several such batches (the dry run prints the worst case):

    CUDA_VISIBLE_DEVICES=0,1,2,3 trl vllm-serve --model Qwen/Qwen3-8B-Base --tensor_parallel_size 4 --max_model_len 10240
    CUDA_VISIBLE_DEVICES=4,5,6,7 accelerate launch --config_file recipes/accelerate_configs/zero3.yaml \\
        --num_processes 4 recipes/dapo_qwen3_8b.py

    python recipes/dapo_qwen3_8b.py --dry_run    # seconds on a CPU; any value can be overridden, also with --config
"""

import sys
from dataclasses import dataclass, field
from pathlib import Path

from trl import ModelConfig
from trl.rewards import get_soft_overlong_punishment

from masa_trl.dapo import DAPOTrainer
from masa_trl.data import ProblemDataArguments
from masa_trl.dry_run import DryRunArguments, DryRunError, parse_recipe_args
from masa_trl.dynamic_sampling import DAPOConfig
from masa_trl.recipe_parser import RecipeParser


sys.path.insert(0, str(Path(__file__).resolve().parent))  # grpo_qwen3_8b.py, also when this file is imported
from grpo_qwen3_8b import PAPER_SETUP as GRPO_SETUP
from grpo_qwen3_8b import main as train_grpo


@dataclass
class DAPOArguments:
    soft_overlong_punishment: bool = field(
        default=False,
        metadata={"help": "Add DAPO's soft overlong punishment reward (off: the MASA paper's DAPO baseline)."},
    )
    soft_punish_cache: int | None = field(
        default=None,
        metadata={
            "help": "L_cache of the soft overlong punishment, in tokens before max_completion_length; default: "
            "max_completion_length // 5 (DAPO's 4096 of 20480), 1638 at 8192."
        },
    )


PAPER_SETUP = {
    # Every setting of the GRPO baseline (grpo_qwen3_8b.py), itself MASA's (masa_qwen3_8b.py) without the meta
    # rollouts, plus:
    **GRPO_SETUP,
    # DAPO's dynamic sampling: only groups whose answer reward varies, up to 10 generation batches per step
    "dynamic_sampling": True,
    "dynamic_sampling_max_rounds": 10,
    # No overlong filtering and no soft overlong punishment (DAPOArguments): the paper's "DAPO without the overlong
    # penalty"
    "mask_truncated_completions": False,
    # Checkpoints: their own folder
    "output_dir": "outputs/dapo-qwen3-8b",
}


def make_parser() -> RecipeParser:
    parser = RecipeParser((ProblemDataArguments, DAPOConfig, ModelConfig, DAPOArguments, DryRunArguments))
    parser.set_defaults(**PAPER_SETUP)
    return parser


def main(data_args, training_args, model_args, dapo_args, dry_run_args):
    # Rewards: the GRPO baseline's answer reward; with --soft_overlong_punishment also DAPO's length penalty, 0 down to
    # -1 over the last soft_punish_cache tokens before max_completion_length
    extra_rewards = {}
    if dapo_args.soft_overlong_punishment:
        soft_punish_cache = dapo_args.soft_punish_cache or training_args.max_completion_length // 5
        if not 0 < soft_punish_cache < training_args.max_completion_length:
            problem = (
                f"soft_punish_cache={soft_punish_cache} must lie between 0 and max_completion_length="
                f"{training_args.max_completion_length}: set --soft_punish_cache."
            )
            raise DryRunError([problem]) if dry_run_args.dry_run else ValueError(problem)
        overlong = get_soft_overlong_punishment(training_args.max_completion_length, soft_punish_cache)
        extra_rewards[f"soft_overlong_punishment (L_cache={soft_punish_cache})"] = overlong

    # Dry run or training: the GRPO baseline's (model, dataset with MASA's prompt filter, save, push), on DAPOTrainer
    return train_grpo(
        data_args, training_args, model_args, dry_run_args, extra_rewards=extra_rewards, trainer_class=DAPOTrainer
    )


if __name__ == "__main__":
    main(*parse_recipe_args(make_parser()))
