"""MASA on a tiny local model and a generated arithmetic dataset: the whole pipeline on a 2-core CPU, offline.

    python recipes/masa_tiny_cpu.py                       # a one-minute smoke run of the whole pipeline
    python recipes/masa_tiny_cpu.py --max_steps 20 --num_meta_generations 8
    python recipes/masa_tiny_cpu.py --dataset_name problems.jsonl --problem_column question --answer_column final
    python recipes/masa_tiny_cpu.py --dry_run             # check config, data, chat template, batch layout; exit

The model is a randomly initialised 2-layer Qwen3 with a locally trained tokenizer (`masa_trl.tiny_model`), so it
neither solves the problems nor writes parsable meta predictions at first: this recipe shows that the pipeline runs
end to end (dual-template generation, meta rewards from gathered solution statistics, one GRPO update over both kinds
of row, meta metrics) in about a minute. Every setting can be overridden on the command line or with `--config`.
"""

from dataclasses import dataclass, field
from pathlib import Path

from transformers import AutoTokenizer

from masa_trl import MASAConfig, MASAGRPOTrainer
from masa_trl.arithmetic import make_arithmetic_dataset
from masa_trl.data import ProblemDataArguments, filter_long_prompts, meta_prompt_kwargs, prepare_problems
from masa_trl.dry_run import DryRunArguments, parse_recipe_args, print_layout, run_dry_run
from masa_trl.recipe_parser import RecipeParser
from masa_trl.tiny_model import build_tiny_model


@dataclass
class TinyScriptArguments:
    model_dir: str = field(default="outputs/tiny-qwen3", metadata={"help": "Where the tiny model is built (once)."})
    num_problems: int = field(
        default=64, metadata={"help": "Number of generated training problems (when --dataset_name is not given)."}
    )


# Experimental setup: the paper's MASA settings, scaled to a tiny model on 2 CPU cores.
TINY_DEFAULTS = dict(
    output_dir="outputs/masa-tiny-cpu",
    dataset_name=None,  # None: generated arithmetic problems; or a Hub id / local file with problem and answer columns
    max_prompt_length=512,
    use_cpu=True,
    bf16=False,
    per_device_train_batch_size=8,  # 2 prompts x G = 4 solution rollouts per step
    num_generations=4,  # G
    num_meta_generations=4,  # M
    max_completion_length=48,
    meta_min_length=8,
    temperature=1.0,
    top_p=1.0,
    learning_rate=1e-4,
    epsilon=0.2,
    epsilon_high=0.28,  # clip range 0.2 / 0.28
    beta=0.0,  # no KL
    difficulty_base=0.01,
    max_steps=4,
    logging_steps=1,
    save_strategy="no",
    report_to="none",
    seed=0,
    dry_run_num_processes=1,
)


def make_parser() -> RecipeParser:
    parser = RecipeParser((TinyScriptArguments, ProblemDataArguments, MASAConfig, DryRunArguments))
    parser.set_defaults(**TINY_DEFAULTS)
    return parser


def main(script_args: TinyScriptArguments, data_args, training_args: MASAConfig, dry_run_args):
    model_dir = Path(script_args.model_dir)
    if not (model_dir / "config.json").exists():
        build_tiny_model(model_dir)
    if data_args.dataset_name is None:
        dataset = make_arithmetic_dataset(
            script_args.num_problems, seed=training_args.seed, terms=(1, 3), digits=(1, 1)
        )
    else:
        dataset = None

    if dry_run_args.dry_run:
        return run_dry_run(
            training_args,
            data_args,
            dry_run_args,
            model_name_or_path=str(model_dir),
            rows=dataset,
            reward_names=["math_accuracy_reward"],
        )

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    prompt_kwargs = dict(
        meta_kwargs=meta_prompt_kwargs(training_args), chat_template_kwargs=training_args.chat_template_kwargs
    )
    if dataset is None:
        dataset = prepare_problems(data_args, tokenizer, **prompt_kwargs)
    else:
        dataset = filter_long_prompts(dataset, tokenizer, data_args.max_prompt_length, **prompt_kwargs)

    trainer = MASAGRPOTrainer(model=str(model_dir), args=training_args, train_dataset=dataset)
    print_layout(training_args, trainer.accelerator.num_processes)
    trainer.train()
    # A saved model (weights, tokenizer, model card) is what the evaluation CLI and `masa_trl.inference` load.
    trainer.save_model(training_args.output_dir)
    if training_args.push_to_hub:
        trainer.push_to_hub()

    if trainer.accelerator.is_main_process:
        last = [entry for entry in trainer.state.log_history if "meta/reward" in entry][-1]
        print("\nMASA tiny CPU run finished (random-init model: pipeline check, not a learning result)")
        for key in (
            "reward",
            "meta/reward",
            "meta/parse_failure_rate",
            "completions/mean_length",
            "meta/completions/mean_length",
            "loss",
        ):
            print(f"  {key:32s} {last.get(key)}")
        print(f"\nModel saved to {training_args.output_dir}. Evaluate it offline with:")
        print(
            f"  python -m evaluation --model {training_args.output_dir} --benchmarks math500 --fixtures --n 2 "
            "--max-new-tokens 32"
        )
    return trainer


if __name__ == "__main__":
    main(*parse_recipe_args(make_parser()))
