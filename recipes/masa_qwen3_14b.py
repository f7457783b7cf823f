"""MASA on Qwen3-14B-Base and DeepScaleR: the setup of the MASA paper (arXiv 2510.03259, section 4) at 14B.

Every training setting is the 8B recipe's (`masa_qwen3_8b.py`, imported below); only the model, the hardware layout
(8 training processes instead of 4, so half the gradient accumulation) and the output folder differ.

Hardware: two nodes of 8 x 80 GB GPUs. One serves vLLM (tensor parallel 8), the other trains with 8 processes
(ZeRO-3). `scripts/slurm/masa_multinode.slurm` launches exactly this on SLURM (or with more training nodes, adjusting
the gradient accumulation); by hand:

    # node A
    trl vllm-serve --model Qwen/Qwen3-14B-Base --tensor_parallel_size 8 --max_model_len 10240
    # node B
    accelerate launch --config_file recipes/accelerate_configs/zero3.yaml --num_processes 8 \\
        recipes/masa_qwen3_14b.py --vllm_server_host <node A>

Check the setup in seconds on a CPU first (config, data columns, chat template, batch layout), and change any value
below on the command line or in a YAML file (`--config`; the command line wins over the YAML):

    python recipes/masa_qwen3_14b.py --dry_run
    accelerate launch ... recipes/masa_qwen3_14b.py --config my_overrides.yaml --push_to_hub --hub_model_id me/masa-14b

Batch: 128 prompts per step x G = 16 = 2048 solution rollouts, plus M = 16 meta rollouts per prompt (2048 more).
With 8 training processes, per_device_train_batch_size 2 x 8 processes x 128 accumulation steps = 2048: every
process generates 256 solution rows and 256 meta rows per step and trains on them in 128 micro-batches of 4 rows.
On N training processes keep per_device_train_batch_size x N x gradient_accumulation_steps = 2048.

Optimizer steps, and what is not in the paper: as in `masa_qwen3_8b.py`, one optimizer step per training step; the
authors' two MASA steps are `--steps_per_generation 128 --gradient_accumulation_steps 64` on this layout.
"""

import sys
from pathlib import Path

from masa_trl.dry_run import parse_recipe_args
from masa_trl.recipe_parser import RecipeParser


sys.path.insert(0, str(Path(__file__).resolve().parent))  # masa_qwen3_8b.py, also when this file is imported
from masa_qwen3_8b import PAPER_SETUP as MASA_8B_SETUP
from masa_qwen3_8b import PER_DEVICE_TRAIN_BATCH_SIZE, PROMPTS_PER_STEP, main
from masa_qwen3_8b import make_parser as make_masa_parser


NUM_TRAINING_PROCESSES = 8  # the layout the defaults are written for: one node trains, another serves vLLM

PAPER_SETUP = {
    # Every setting of the 8B recipe (masa_qwen3_8b.py), except:
    **MASA_8B_SETUP,
    # Model: Qwen3-14B-Base instead of Qwen3-8B-Base
    "model_name_or_path": "Qwen/Qwen3-14B-Base",
    # Batch: 8 training processes instead of 4, so 2 x 8 processes x 128 = 2048 solution rollouts = 128 prompts per
    # step, one optimizer step per step, as at 8B
    "gradient_accumulation_steps": PROMPTS_PER_STEP * 16 // (PER_DEVICE_TRAIN_BATCH_SIZE * NUM_TRAINING_PROCESSES),
    "dry_run_num_processes": NUM_TRAINING_PROCESSES,
    # Checkpoints: their own folder
    "output_dir": "outputs/masa-qwen3-14b",
}


def make_parser() -> RecipeParser:
    return make_masa_parser(PAPER_SETUP)


# main: the 8B recipe's (solution reward, dry run, model, dataset, MASAGRPOTrainer, save and push), imported above


if __name__ == "__main__":
    main(*parse_recipe_args(make_parser()))
