"""GRPO on Qwen3-8B-Base and DeepScaleR: the baseline of the MASA paper (arXiv 2510.03259, section 4), with every
setting of `masa_qwen3_8b.py` (imported below) except the meta rollouts.

The authors' GRPO baseline ran with the same flags as their MASA run: 128 prompts per step, G = 16, lr 1e-6, weight
decay 0.1, 20 warm-up steps, gradient clipping 1.0, clip range 0.2 / 0.28, token-level loss ("token-mean" in verl,
`loss_type="dapo"` in TRL), no KL, temperature 1.0, top-p 1.0, 8k tokens, one epoch. So does this recipe, with the
same model, data, prompt filter (the MASA meta prompt is measured too, so both runs train on the same problems),
solution prompt, answer reward, batch layout and hardware layout, on `trl.GRPOTrainer` itself.

Hardware: one node of 8 x 80 GB GPUs; vLLM on 4, training on 4 (README, "vLLM server mode"):

    CUDA_VISIBLE_DEVICES=0,1,2,3 trl vllm-serve --model Qwen/Qwen3-8B-Base --tensor_parallel_size 4 --max_model_len 10240
    CUDA_VISIBLE_DEVICES=4,5,6,7 accelerate launch --config_file recipes/accelerate_configs/zero3.yaml \\
        --num_processes 4 recipes/grpo_qwen3_8b.py

    python recipes/grpo_qwen3_8b.py --dry_run    # seconds on a CPU; any value can be overridden, also with --config

Optimizer steps, compared with MASA: 2 x 4 processes x 256 accumulation steps = 2048 solution rollouts (128 prompts)
per step, and one optimizer step per training step, exactly as `masa_qwen3_8b.py` (whose one step also holds the 2048
meta rollouts). The authors' MASA run took 2 optimizer steps per training step where their GRPO took one; ours takes
one in both, so the comparison is step for step and update for update (see `masa_qwen3_8b.py` for the flags that
reproduce the authors' two MASA steps instead).
"""

import sys
from collections.abc import Callable
from pathlib import Path

from transformers import AutoTokenizer
from trl import GRPOConfig, GRPOTrainer, ModelConfig, get_peft_config

from masa_trl.data import ProblemDataArguments, hub_dataset_id, meta_prompt_kwargs, prepare_problems
from masa_trl.dry_run import DryRunArguments, parse_recipe_args, print_layout, require_peft, run_dry_run
from masa_trl.math_reward import math_accuracy_reward
from masa_trl.recipe_parser import RecipeParser
from masa_trl.templates import solution_prompt


sys.path.insert(0, str(Path(__file__).resolve().parent))  # masa_qwen3_8b.py, also when this file is imported
from masa_qwen3_8b import PAPER_SETUP as MASA_8B_SETUP
from masa_qwen3_8b import PROMPTS_PER_STEP


# MASA's own settings, which GRPO has no use for: the meta rollouts, the meta reward and expert behaviour cloning
MASA_ONLY = (
    "num_meta_generations",
    "pass_rate_scale",
    "difficulty_base",
    "use_expert_bc",
    "expert_buffer_size",
    "expert_bc_steps",
)

PAPER_SETUP = {
    # Every other setting of the MASA recipe (masa_qwen3_8b.py): model, data, rollouts, optimisation, policy loss,
    # batch (2 x 4 processes x 256 = 2048 solution rollouts = 128 prompts per step), logging, tracking, checkpoints
    **{name: value for name, value in MASA_8B_SETUP.items() if name not in MASA_ONLY},
    # Checkpoints: their own folder
    "output_dir": "outputs/grpo-qwen3-8b",
}


def make_parser() -> RecipeParser:
    parser = RecipeParser((ProblemDataArguments, GRPOConfig, ModelConfig, DryRunArguments))
    parser.set_defaults(**PAPER_SETUP)
    return parser


def main(
    data_args,
    training_args,
    model_args,
    dry_run_args,
    extra_rewards: dict[str, Callable] | None = None,
    trainer_class=GRPOTrainer,
):
    # Solution reward: 1 if the last \boxed{} answer equals the gold answer (math-verify), else 0; plus `extra_rewards`
    # (name: function), where the DAPO recipe passes its soft overlong punishment
    rewards = {"math_accuracy_reward": math_accuracy_reward, **(extra_rewards or {})}
    # Prompts are filtered with MASA's rule (solution and meta prompt within max_prompt_length): the same problems
    filter_meta_kwargs = meta_prompt_kwargs(max_length=training_args.max_completion_length)

    if dry_run_args.dry_run:
        return run_dry_run(
            training_args,
            data_args,
            dry_run_args,
            model_name_or_path=model_args.model_name_or_path,
            model_revision=model_args.model_revision,
            meta_kwargs=filter_meta_kwargs,
            expected_prompts_per_step=PROMPTS_PER_STEP,
            reward_names=list(rewards),
            model_args=model_args,
        )
    require_peft(model_args)  # --use_peft without peft installed: fail now, not after loading the data

    # Model: loaded by the trainer from these arguments
    training_args.model_init_kwargs = {
        "revision": model_args.model_revision,
        "dtype": model_args.dtype,
        "attn_implementation": model_args.attn_implementation,
        **(training_args.model_init_kwargs or {}),
    }

    # Dataset: problem and answer columns, the solution prompt MASA uses
    tokenizer = AutoTokenizer.from_pretrained(model_args.model_name_or_path, revision=model_args.model_revision)
    with training_args.main_process_first(desc="dataset"):
        dataset = prepare_problems(
            data_args,
            tokenizer,
            meta_kwargs=filter_meta_kwargs,
            chat_template_kwargs=training_args.chat_template_kwargs,
        )
        dataset = dataset.map(lambda example: {"prompt": solution_prompt(example["problem"])})

    # Training (`trainer_class`: the DAPO recipe passes masa_trl.DAPOTrainer, GRPO with dynamic sampling)
    trainer = trainer_class(
        model=model_args.model_name_or_path,
        reward_funcs=list(rewards.values()),
        args=training_args,
        train_dataset=dataset,
        peft_config=get_peft_config(model_args),
    )
    print_layout(training_args, trainer.accelerator.num_processes, PROMPTS_PER_STEP)
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)

    # Save, and push the model and its card to the Hub
    if training_args.push_to_hub:  # saves the model, writes the card, uploads the output folder
        trainer.push_to_hub(dataset_name=hub_dataset_id(data_args.dataset_name))
    else:
        trainer.save_model(training_args.output_dir)
    trainer.end()
    return trainer


if __name__ == "__main__":
    main(*parse_recipe_args(make_parser()))
