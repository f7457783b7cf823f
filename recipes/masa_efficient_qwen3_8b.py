"""MASA-efficient on Qwen3-8B-Base and DeepScaleR: MASA, then predictive gating, early cutoff and notion hints from
step k = 120 (the MASA paper, arXiv 2510.03259, sections 3.3 and 4).

Up to step k this is the MASA recipe (`masa_qwen3_8b.py`, imported below: every setting, expert behaviour cloning
included). From step k on, the meta rollouts run first: a prompt whose M = 16 predicted pass rates have a standard
deviation below 0.1 and agree on all-correct or all-wrong is gated (its G solution rollouts are not generated and carry
no loss), solution rollouts are cut at 2 x the median predicted length, and the predicted notions are added to the
solution prompt as a hint. Not in the paper: a small share of gated prompts is still rolled out, untrained, to measure
the gate's precision, and gating pauses while it is poor (`--gating_audit_fraction`, `--gating_precision_floor`).

Hardware: one node of 8 x 80 GB GPUs, the authors' budget (8 x H100). vLLM generates on 4 of them, training runs on
the other 4 (README, "vLLM server mode"; `scripts/launch_vllm_server_mode.sh` starts both):

    CUDA_VISIBLE_DEVICES=0,1,2,3 trl vllm-serve --model Qwen/Qwen3-8B-Base --tensor_parallel_size 4 --max_model_len 10240
    CUDA_VISIBLE_DEVICES=4,5,6,7 accelerate launch --config_file recipes/accelerate_configs/zero3.yaml \\
        --num_processes 4 recipes/masa_efficient_qwen3_8b.py

Check the setup in seconds on a CPU first (config, data columns, chat template, batch layout), and change any value
below on the command line or in a YAML file (`--config`; the command line wins over the YAML):

    python recipes/masa_efficient_qwen3_8b.py --dry_run
    accelerate launch ... recipes/masa_efficient_qwen3_8b.py --efficient_start_step 80 --cutoff_factor 3.0

Batch: as in `masa_qwen3_8b.py`, 2 x 4 processes x 256 accumulation steps = 2048 solution rollouts (128 prompts)
plus 2048 meta rollouts per step. Gated prompts keep their place in the batch with their solution rows masked, so the
layout and the one optimizer step per training step do not change after step k.

Optimizer steps, and what is not in the paper: as in `masa_qwen3_8b.py` (the authors' two MASA steps:
`--steps_per_generation 256 --gradient_accumulation_steps 128`).
"""

import sys
from pathlib import Path

from masa_trl.dry_run import parse_recipe_args
from masa_trl.recipe_parser import RecipeParser


sys.path.insert(0, str(Path(__file__).resolve().parent))  # masa_qwen3_8b.py, also when this file is imported
from masa_qwen3_8b import PAPER_SETUP as MASA_8B_SETUP
from masa_qwen3_8b import main
from masa_qwen3_8b import make_parser as make_masa_parser


PAPER_SETUP = {
    # Every setting of the MASA recipe (masa_qwen3_8b.py), plus:
    **MASA_8B_SETUP,
    # MASA-efficient from step k = 120: gate prompts whose predicted pass rates have std < 0.1, cut rollouts at
    # 2 x the predicted length, add the predicted notions to the solution prompt as a hint
    "efficient_start_step": 120,
    "gating_std_threshold": 0.1,
    "cutoff_factor": 2.0,
    "notion_hint": True,
    # Checkpoints: their own folder
    "output_dir": "outputs/masa-efficient-qwen3-8b",
}


def make_parser() -> RecipeParser:
    return make_masa_parser(PAPER_SETUP)


# main: the MASA recipe's (solution reward, dry run, model, dataset, MASAGRPOTrainer, save and push), imported above;
# MASAGRPOTrainer switches to the efficient rollouts at efficient_start_step


if __name__ == "__main__":
    main(*parse_recipe_args(make_parser()))
