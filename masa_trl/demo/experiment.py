"""The demo's experimental setup, shared by `recipes/masa_demo_cpu.py` and `benchmarks/compare_grpo_masa.py`.

[`prepare_experiment`] gives the warm-started model, its tokenizer, the held-out split and the RL problem stream
(held-out problems excluded); [`Experiment.evaluate`] runs the held-out evaluation with the trainer's prompts and
sampling. Both scripts therefore measure the same thing on the same problems.
"""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from masa_trl.arithmetic import make_sum_dataset, make_sum_heldout
from masa_trl.demo.task import META_TEMPLATE, SOLUTION_TEMPLATE, solution_messages
from masa_trl.demo.warm_start import PromptRenderer, WarmStartConfig, warm_start


# The experiment: the paper's MASA settings scaled to a 0.54M-parameter model on 2 CPU cores (a throwaway prototype
# measured the learning rate, group sizes and step count on such a machine). The recipe's command line overrides any.
DEMO_DEFAULTS = dict(
    output_dir="outputs/demo/masa",
    use_cpu=True,
    bf16=False,
    per_device_train_batch_size=64,  # 8 problems x G = 8 solution rollouts (+ 64 meta rollouts) per step
    num_generations=8,  # G
    num_meta_generations=8,  # M
    max_completion_length=48,  # a meta JSON is 22-40 tokens, a solution 6-8
    # The meta prompt ("Predict: {problem}") states no range, and predictions outside meta_min_length..
    # max_completion_length are unparsable: 1 accepts every length the warm start (4..16) and the tokenizer's corpus
    # (1..48) hold, and matches the held-out evaluation's parser.
    meta_min_length=1,
    meta_prompt_template=META_TEMPLATE,  # "Predict: {problem}", what the warm start trained
    meta_system_prompt="",  # no system message, as in the warm start
    temperature=1.0,
    top_p=1.0,
    learning_rate=1e-4,  # 2e-4 and 3e-4 erode the solver, then the predictor collapses to "pass_rate 0"
    lr_scheduler_type="constant",
    max_grad_norm=1.0,
    beta=0.0,  # no KL, as in the paper
    loss_type="dapo",  # token-level loss
    epsilon=0.2,
    epsilon_high=0.28,
    difficulty_base=0.01,
    max_steps=300,
    logging_steps=5,
    save_strategy="no",
    report_to="none",
    seed=0,
    # Expert behaviour cloning (paper section 3.3): 1 cross-entropy step per 32 experts at the RL learning rate.
    use_expert_bc=True,
    expert_buffer_size=32,
    expert_bc_steps=1,
    expert_bc_learning_rate=1e-4,
    expert_bc_batch_size=32,
    # Every notion scores 0 on this task (bare \boxed{N} answers contain no notion word), so a notion threshold above
    # 0 would admit no expert at all.
    expert_min_notion_reward=0.0,
    # MASA-efficient is off unless efficient_start_step is set. Notion hints would append a sentence the solver never
    # saw ("Hint: the following notion may help: addition") to "Solve: 37+5+81" and throw it off its distribution.
    efficient_start_step=None,
    notion_hint=False,
)

NOTION_NOTE = (
    "notion reward: 0 by construction on this task (answers are bare \\boxed{N}, so no predicted notion can occur in "
    "a solution); it is kept in the paper's mean, where it shifts every meta reward of a group equally and so leaves "
    "the group-relative advantages unchanged"
)


@dataclass
class Experiment:
    """The warm-started model directory, the data, and the prompt renderers of one demo experiment."""

    model_dir: Path
    warm_start_record: dict
    warm_start_cached: bool
    tokenizer: object
    heldout: object  # datasets.Dataset: problem, answer, terms, digits
    train: object  # datasets.Dataset: the same columns plus the solution `prompt`
    render_solution: Callable[[list[str]], list[list[int]]]
    render_meta: Callable[[list[str]], list[list[int]]]

    @property
    def cells(self) -> list[tuple[int, int]]:
        return list(zip(self.heldout["terms"], self.heldout["digits"], strict=True))

    def evaluate(
        self,
        model,
        *,
        num_solution_samples: int,
        num_meta_samples: int,
        max_new_tokens: int,
        pass_rate_scale: int,
        seed: int,
    ):
        """[`~masa_trl.demo.heldout.evaluate_heldout`] on this experiment's held-out split."""
        from masa_trl.demo.heldout import evaluate_heldout

        return evaluate_heldout(
            model,
            self.tokenizer,
            self.heldout["problem"],
            self.heldout["answer"],
            self.cells,
            render_solution=self.render_solution,
            render_meta=self.render_meta,
            num_solution_samples=num_solution_samples,
            num_meta_samples=num_meta_samples,
            max_new_tokens=max_new_tokens,
            pass_rate_scale=pass_rate_scale,
            seed=seed,
        )


def prepare_experiment(
    warm_start_config: WarmStartConfig,
    *,
    cache_dir: str | Path = "outputs/demo",
    heldout_per_cell: int = 20,
    heldout_seed: int = 1234,
    num_train_problems: int = 4000,
    train_seed: int = 0,
    progress: bool = True,
) -> Experiment:
    """Warm-start (or load from the cache) the demo model and build the held-out split and the RL problem stream."""
    from transformers import AutoTokenizer

    model_dir, record, cached = warm_start(warm_start_config, cache_dir, progress=progress)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    heldout = make_sum_heldout(heldout_per_cell, seed=heldout_seed)
    train = make_sum_dataset(num_train_problems, seed=train_seed, exclude=set(heldout["problem"]))
    train = train.map(lambda row: {"prompt": solution_messages(row["problem"])}, desc="solution prompts")
    return Experiment(
        model_dir=model_dir,
        warm_start_record=record,
        warm_start_cached=cached,
        tokenizer=tokenizer,
        heldout=heldout,
        train=train,
        render_solution=PromptRenderer(tokenizer, SOLUTION_TEMPLATE),
        render_meta=PromptRenderer(tokenizer, META_TEMPLATE),
    )
