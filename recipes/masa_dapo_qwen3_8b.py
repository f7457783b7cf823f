"""MASA + DAPO on Qwen3-8B-Base and DeepScaleR (the MASA paper, arXiv 2510.03259, table 4: MASA on top of DAPO).

Every setting of the MASA recipe (`masa_qwen3_8b.py`, imported below: meta rollouts, meta rewards, expert behaviour
cloning, batch layout, optimizer steps) plus DAPO's dynamic sampling as in the DAPO baseline (`dapo_qwen3_8b.py`):
prompts whose G solution rollouts all get the same answer reward are dropped, together with their M meta rollouts,
and generation batches are drawn until the training batch is full (`masa_trl.MASADAPOTrainer`). The MASA recipe
already has DAPO's clip-higher (0.2 / 0.28) and token-level loss, and, like the paper's DAPO baseline, no overlong
penalty or filtering.

    CUDA_VISIBLE_DEVICES=0,1,2,3 trl vllm-serve --model Qwen/Qwen3-8B-Base --tensor_parallel_size 4 --max_model_len 10240
    CUDA_VISIBLE_DEVICES=4,5,6,7 accelerate launch --config_file recipes/accelerate_configs/zero3.yaml \\
        --num_processes 4 recipes/masa_dapo_qwen3_8b.py

    python recipes/masa_dapo_qwen3_8b.py --dry_run    # prints the generation batch and the worst-case rounds
"""

import sys
from pathlib import Path

from masa_trl.dapo import MASADAPOTrainer
from masa_trl.dry_run import parse_recipe_args
from masa_trl.recipe_parser import RecipeParser


sys.path.insert(0, str(Path(__file__).resolve().parent))  # masa_qwen3_8b.py, also when this file is imported
from dapo_qwen3_8b import PAPER_SETUP as DAPO_SETUP
from masa_qwen3_8b import PAPER_SETUP as MASA_8B_SETUP
from masa_qwen3_8b import main as train_masa
from masa_qwen3_8b import make_parser as make_masa_parser


DYNAMIC_SAMPLING = ("dynamic_sampling", "dynamic_sampling_max_rounds", "mask_truncated_completions")

PAPER_SETUP = {
    # Every setting of the MASA recipe (masa_qwen3_8b.py), plus the DAPO baseline's dynamic sampling
    **MASA_8B_SETUP,
    **{name: DAPO_SETUP[name] for name in DYNAMIC_SAMPLING},
    # Checkpoints: their own folder
    "output_dir": "outputs/masa-dapo-qwen3-8b",
}


def make_parser() -> RecipeParser:
    return make_masa_parser(PAPER_SETUP)


def main(data_args, training_args, model_args, dry_run_args):
    return train_masa(data_args, training_args, model_args, dry_run_args, trainer_class=MASADAPOTrainer)


if __name__ == "__main__":
    main(*parse_recipe_args(make_parser()))
